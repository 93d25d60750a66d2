"""FunASR backend on tiny random-weight models: real FunASR code, no mocks. Text content is noise
and never asserted; event flow, timing, caches, 2-pass spans and errors are."""

from __future__ import annotations

import asyncio
import itertools
import math
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bus.schemas import AsrEvent, AsrParams
from engines.asr.base import SAMPLE_RATE, ModelNotFound
from engines.asr.funasr import FunAsrBackend
from engines.asr.funasr.backend import _Step
from engines.asr.funasr.batch import StreamBatcher, chunk_samples, stream_config
from engines.asr.funasr.text import hotword_arg, itn
from funspeech.settings import Settings
from tests.funasr_tiny import build_tiny_models

DATA = Path(__file__).resolve().parent / "data"
PUNCS = "，。？、,.?"
EXECUTOR = ThreadPoolExecutor(4)
STREAM_CFG = stream_config(600)  # the default chunk: FUNASR_CHUNK_MS=600
CHUNK_SAMPLES = chunk_samples(STREAM_CFG)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_tiny_models(tmp_path_factory.mktemp("funasr_tiny"))


def settings_for(models: dict[str, Path], **over: Any) -> Settings:
    base: dict[str, Any] = {
        "funasr_realtime_model": str(models["streaming"]),
        "funasr_offline_model": str(models["offline"]),
        "vad_model": str(models["vad"]),
        "punc_model": str(models["punc"]),
        "punc_realtime_model": str(models["punc"]),
        "funasr_ncpu": 1,
    }
    return Settings(**(base | over))


def load_backend(settings: Settings) -> FunAsrBackend:
    backend = FunAsrBackend(settings.funasr(), "cpu", EXECUTOR)
    backend.load()
    return backend


_BACKENDS: dict[tuple, FunAsrBackend] = {}


def backend_for(models: dict[str, Path], **over: Any) -> FunAsrBackend:
    key = tuple(sorted(over.items()))
    if key not in _BACKENDS:
        _BACKENDS[key] = load_backend(settings_for(models, **over))
    return _BACKENDS[key]


def _clip(name: str, seconds: float, freq: float) -> np.ndarray:
    path = DATA / f"{name}.wav"
    if path.is_file():
        import soundfile as sf

        audio, sr = sf.read(path, dtype="float32")
        if sr == SAMPLE_RATE and audio.ndim == 1:
            return audio
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.2 * np.sin(2 * np.pi * freq * t) * (1.2 + np.sin(2 * np.pi * 3 * t))).astype(
        np.float32
    )


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), np.float32)


def speech_audio() -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Three utterances with 1.2 s pauses, the last running to the very end; (audio, spans ms)."""
    parts = [_clip("zh_weather", 3.5, 300), silence(1.2), _clip("en_meeting", 3.0, 450)]
    parts += [silence(1.2), _clip("zh_music", 3.2, 380)]
    spans, pos = [], 0
    for i, p in enumerate(parts):
        if i % 2 == 0:
            spans.append((pos * 1000 // SAMPLE_RATE, (pos + len(p)) * 1000 // SAMPLE_RATE))
        pos += len(p)
    return np.concatenate(parts), spans


def total_ms(audio: np.ndarray) -> int:
    return len(audio) * 1000 // SAMPLE_RATE


async def run_stream(
    backend: FunAsrBackend, audio: np.ndarray, options: AsrParams, seed: int = 0
) -> tuple[list[AsrEvent], int]:
    """Feed in random client chunk sizes; returns (events, how many came before finish())."""
    events: list[AsrEvent] = []
    stream = backend.open_stream(options, events.append)
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(audio):
        n = int(rng.integers(160, 7000))
        await stream.feed(audio[i : i + n])
        i += n
    before = len(events)
    await stream.finish()
    return events, before


def check_flow(events: list[AsrEvent]) -> list[AsrEvent]:
    """begin -> partial* -> end per sentence, indices 1.., consistent times; returns the ends."""
    index, current, last_end, ends = 0, None, 0, []
    for e in events:
        if e.type == "begin":
            assert current is None, "begin inside an open sentence"
            index += 1
            assert e.index == index
            assert e.begin_ms >= last_end
            current = e
        elif e.type == "partial":
            assert current is not None and e.index == index
            assert e.time_ms >= current.begin_ms and e.text
        else:
            assert current is not None and e.index == index
            assert e.begin_ms == current.begin_ms <= e.time_ms
            last_end = e.time_ms
            current = None
            ends.append(e)
    assert current is None, "a sentence was left open"
    return ends


def key(events: list[AsrEvent]) -> list[tuple]:
    return [(e.type, e.index, e.begin_ms, e.time_ms, e.text) for e in events]


# --- loading and errors
def test_loads_all_models_from_dirs(tiny_models: dict[str, Path]) -> None:
    backend = backend_for(tiny_models)
    assert backend.streaming and backend.streaming.path == tiny_models["streaming"].resolve()
    assert backend.offline and backend.offline.path == tiny_models["offline"].resolve()
    assert backend.vad and backend.punc
    assert backend.punc_realtime is None  # ASR_ENABLE_REALTIME_PUNC is off
    assert [m.id for m in backend.models] == ["paraformer-large"]
    assert backend.capacity >= 2


# ModelScope cache layouts, relative to the cache root (MODELSCOPE_PATH), for id iic/tiny-<role>
LAYOUTS = {
    "flat": ("", "{owner}/{name}"),  # older SDKs with MODELSCOPE_CACHE set
    "models": ("", "models/{owner}/{name}"),  # older SDKs
    "snapshot": ("", "models/{owner}--{name}/snapshots/master"),  # current SDK (modelscope_hub)
    # the current SDK's default root ~/.cache/modelscope is the parent of the old default .../hub
    "snapshot-above-hub": ("hub", "../models/{owner}--{name}/snapshots/v1.0.2"),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_model_ids_resolve_in_modelscope_cache(
    tiny_models: dict[str, Path], tmp_path: Path, layout: str
) -> None:
    root_sub, pattern = LAYOUTS[layout]
    root = tmp_path / "cache" / root_sub
    root.mkdir(parents=True)
    ids, dirs = {}, {}
    for role, src in tiny_models.items():
        ids[role] = f"iic/tiny-{role}"
        dirs[role] = (root / pattern.format(owner="iic", name=f"tiny-{role}")).resolve()
        shutil.copytree(src, dirs[role])
    st = Settings(
        modelscope_path=str(root),
        funasr_realtime_model=ids["streaming"],
        funasr_offline_model=ids["offline"],
        vad_model=ids["vad"],
        punc_model=ids["punc"],
        funasr_ncpu=1,
    )
    backend = load_backend(st)
    assert backend.vad and backend.vad.path == dirs["vad"]
    assert backend.streaming and backend.streaming.path == dirs["streaming"]


def test_missing_model_id_names_setting_and_paths(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    st = settings_for(tiny_models, vad_model="iic/no-such-vad", modelscope_path=str(tmp_path))
    t = time.monotonic()
    with pytest.raises(ModelNotFound) as err:
        load_backend(st)
    assert time.monotonic() - t < 10  # a clear error at load, never a hub download
    msg = str(err.value)
    assert "VAD_MODEL" in msg and "iic/no-such-vad" in msg
    assert str(tmp_path / "iic/no-such-vad") in msg
    assert str(tmp_path / "models" / "iic/no-such-vad") in msg
    assert str(tmp_path / "models" / "iic--no-such-vad" / "snapshots" / "master") in msg


def test_missing_local_dir(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "offline"
    st = settings_for(tiny_models, funasr_offline_model=str(missing))
    with pytest.raises(ModelNotFound, match="FUNASR_OFFLINE_MODEL") as err:
        load_backend(st)
    assert str(missing) in str(err.value)


def test_dir_without_weights_or_config(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    no_weights = tmp_path / "punc"
    shutil.copytree(tiny_models["punc"], no_weights)
    (no_weights / "model.pt").unlink()
    with pytest.raises(ModelNotFound, match=r"model\.pt") as err:
        load_backend(settings_for(tiny_models, punc_model=str(no_weights)))
    assert str(no_weights / "model.pt") in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFound, match=r"config\.yaml"):
        load_backend(settings_for(tiny_models, punc_model=str(empty)))


def test_corrupt_weights_name_the_file(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "punc"
    shutil.copytree(tiny_models["punc"], bad)
    (bad / "model.pt").write_bytes((bad / "model.pt").read_bytes()[:500])
    with pytest.raises(RuntimeError, match="PUNC_MODEL") as err:
        load_backend(settings_for(tiny_models, punc_model=str(bad)))
    assert str(bad / "model.pt") in str(err.value)


# --- streaming
@pytest.mark.asyncio
async def test_stream_partials_ends_and_two_pass(tiny_models: dict[str, Path]) -> None:
    backend = backend_for(tiny_models)
    audio, spans = speech_audio()
    opts = AsrParams(enable_punctuation=False)
    events, before_finish = await run_stream(backend, audio, opts)
    ends = check_flow(events)
    early = events[:before_finish]
    assert any(e.type == "partial" for e in early), "no partial while audio flowed"
    assert sum(e.type == "end" for e in early) >= 2, "VAD end points at the pauses"
    assert len(ends) == len(spans)
    for end, (b, e) in zip(ends, spans, strict=True):  # each sentence sits on its utterance
        assert b - 500 <= end.begin_ms < e and b < end.time_ms <= e + 1200
    assert ends[-1].time_ms == total_ms(audio)  # the tail up to the last sample
    for end in ends:  # 2-pass: the final is the offline decode of exactly the sentence span
        clip = audio[end.begin_ms * 16 : end.time_ms * 16]
        assert end.text == backend._decode([clip], None)[0].replace("<unk>", "")


@pytest.mark.asyncio
async def test_tail_final_is_the_offline_decode_of_its_span(tiny_models: dict[str, Path]) -> None:
    """(The tail flush itself, for every backend: tests/test_backend_contract.py.)"""
    backend = backend_for(tiny_models)
    audio = np.concatenate([silence(0.5), _clip("zh_weather", 3.5, 300)])[
        : 4 * CHUNK_SAMPLES + 1700
    ]
    events, before = await run_stream(backend, audio, AsrParams(enable_punctuation=False))
    assert not [e for e in events[:before] if e.type == "end"], "speech runs to the end"
    ends = check_flow(events)
    assert len(ends) == 1 and ends[0].time_ms == total_ms(audio)
    clip = audio[ends[0].begin_ms * 16 :]  # includes the 1,700-sample tail
    assert ends[0].text == backend._decode([clip], None)[0].replace("<unk>", "")


@pytest.mark.asyncio
async def test_punctuation_and_realtime_punctuation(tiny_models: dict[str, Path]) -> None:
    audio, _ = speech_audio()
    plain = backend_for(tiny_models)
    rt = backend_for(tiny_models, asr_enable_realtime_punc=True)
    assert rt.punc_realtime is not None
    raw, _ = await run_stream(plain, audio, AsrParams(enable_punctuation=False))
    punc, _ = await run_stream(rt, audio, AsrParams(enable_punctuation=True))
    strip = str.maketrans("", "", PUNCS)
    assert [e.text.translate(strip) for e in punc] == [e.text for e in raw]
    assert any(c in e.text for e in punc if e.type == "end" for c in PUNCS)
    assert any(c in e.text for e in punc if e.type == "partial" for c in PUNCS)


@pytest.mark.asyncio
@pytest.mark.parametrize(("batching", "chunk_ms"), [(True, 600), (False, 600), (True, 240)])
async def test_interleaved_sessions_match_solo_runs_with_and_without_batching(
    tiny_models: dict[str, Path], batching: bool, chunk_ms: int
) -> None:
    """Every event, partials included, equal to the solo runs (FunASR is deterministic here;
    the contract test compares the sentences of the default configuration only)."""
    backend = backend_for(tiny_models, funasr_stream_batching=batching, funasr_chunk_ms=chunk_ms)
    a, _ = speech_audio()
    b = np.concatenate([silence(0.9), a[: len(a) // 2][::-1].copy(), silence(1.0)])
    solo_a, _ = await run_stream(backend, a, AsrParams())
    solo_b, _ = await run_stream(backend, b, AsrParams())
    got: dict[str, list[AsrEvent]] = {"a": [], "b": []}
    sa = backend.open_stream(AsrParams(), got["a"].append)
    sb = backend.open_stream(AsrParams(), got["b"].append)

    async def pump(stream: Any, audio: np.ndarray, step: int) -> None:
        for i in range(0, len(audio), step):
            await stream.feed(audio[i : i + step])
            await asyncio.sleep(0)
        await stream.finish()

    await asyncio.gather(pump(sa, a, 3200), pump(sb, b, 4000))
    assert key(got["a"]) == key(solo_a)
    assert key(got["b"]) == key(solo_b)
    assert check_flow(got["b"])


@pytest.mark.asyncio
async def test_chunk_240_gives_partials_every_240_ms(tiny_models: dict[str, Path]) -> None:
    """FUNASR_CHUNK_MS=240: a partial per 240 ms of audio while a sentence is open (the earlier
    FunSpeech's cadence), look-ahead unchanged; sentence spans and 2-pass finals do not depend
    on the chunk."""
    audio, spans = speech_audio()
    runs = {}
    for chunk_ms in (600, 240):
        backend = backend_for(tiny_models, funasr_chunk_ms=chunk_ms)
        assert backend.stream_cfg["chunk_size"] == [0, chunk_ms // 60, 5]
        runs[chunk_ms], _ = await run_stream(backend, audio, AsrParams(enable_punctuation=False))
    partials = {c: [e for e in ev if e.type == "partial"] for c, ev in runs.items()}
    gaps = [
        b.time_ms - a.time_ms
        for a, b in itertools.pairwise(partials[240])
        if a.index == b.index  # within one sentence
    ]
    assert gaps and all(g % 240 == 0 for g in gaps) and sorted(gaps)[len(gaps) // 2] == 240, gaps
    assert all(p.time_ms % 240 == 0 for p in partials[240])
    assert len(partials[240]) >= 2 * len(partials[600]), (len(partials[240]), len(partials[600]))
    ends = {c: [(e.begin_ms, e.time_ms, e.text) for e in check_flow(ev)] for c, ev in runs.items()}
    assert ends[240] == ends[600] and len(ends[240]) == len(spans)


@pytest.mark.asyncio
async def test_max_sentence_silence_is_per_session(tiny_models: dict[str, Path]) -> None:
    backend = backend_for(tiny_models)
    audio, _ = speech_audio()
    (short, _), (long, _) = await asyncio.gather(
        run_stream(backend, audio, AsrParams(max_sentence_silence_ms=300)),
        run_stream(backend, audio, AsrParams(max_sentence_silence_ms=3000)),
    )
    assert len(check_flow(short)) > 3  # short pauses inside utterances now end sentences
    assert len(check_flow(long)) == 1  # the pauses between utterances (~1.8 s) do not


@pytest.mark.asyncio
async def test_nearfield_filter_drops_quiet_speech(tiny_models: dict[str, Path]) -> None:
    audio, _ = speech_audio()
    quiet = audio * (0.004 / float(np.sqrt(np.mean(audio**2))))
    gated, _ = await run_stream(backend_for(tiny_models), quiet, AsrParams())
    assert gated == []
    open_, _ = await run_stream(
        backend_for(tiny_models, asr_enable_nearfield_filter=False), quiet, AsrParams()
    )
    assert check_flow(open_)


@pytest.mark.asyncio
async def test_realtime_mode_streams_without_offline(tiny_models: dict[str, Path]) -> None:
    backend = backend_for(tiny_models, asr_model_mode="realtime")
    assert backend.offline is None
    audio, spans = speech_audio()
    events, _ = await run_stream(backend, audio, AsrParams())
    ends = check_flow(events)  # finals come from flushing the streaming model
    assert len(ends) == len(spans) and ends[-1].time_ms == total_ms(audio)
    with pytest.raises(RuntimeError, match="offline"):
        await backend.transcribe(audio, AsrParams())


@pytest.mark.asyncio
async def test_offline_mode_refuses_streams(tiny_models: dict[str, Path]) -> None:
    backend = backend_for(tiny_models, asr_model_mode="offline")
    with pytest.raises(RuntimeError, match="realtime"):
        backend.open_stream(AsrParams(), lambda e: None)
    assert await backend.transcribe(speech_audio()[0], AsrParams())


# --- one-shot
@pytest.mark.asyncio
async def test_transcribe_segments(tiny_models: dict[str, Path]) -> None:
    backend = backend_for(tiny_models)
    audio, spans = speech_audio()
    segs = await backend.transcribe(audio, AsrParams(enable_voice_detection=True))
    assert len(segs) == len(spans)
    prev = 0
    for seg, (b, e) in zip(segs, spans, strict=True):
        assert prev <= seg.begin_ms < seg.time_ms <= total_ms(audio) and seg.text
        assert b - 500 <= seg.begin_ms < e and b < seg.time_ms <= e + 1200
        prev = seg.time_ms
    whole = await backend.transcribe(audio[: 3 * SAMPLE_RATE], AsrParams())
    assert [(s.begin_ms, s.time_ms) for s in whole] == [(0, 3000)]
    assert await backend.transcribe(np.zeros(0, np.float32), AsrParams()) == []


# --- pieces
def test_batched_step_equals_per_session_inference(tiny_models: dict[str, Path]) -> None:
    model = backend_for(tiny_models).streaming
    assert model is not None
    batcher = StreamBatcher(model.model, dict(model.kwargs, **STREAM_CFG))
    rng = np.random.default_rng(1)
    audios = [(0.1 * rng.standard_normal(CHUNK_SAMPLES * 7)).astype(np.float32) for _ in range(5)]
    ref: list[dict] = [{} for _ in audios]
    bat: list[dict] = [{} for _ in audios]
    out_ref: list[list[str]] = [[] for _ in audios]
    out_bat: list[list[str]] = [[] for _ in audios]
    for step in range(9):
        ready = [i for i in range(len(audios)) if 0 <= step - i < 7]  # staggered starts
        items = []
        for i in ready:
            chunk = audios[i][(step - i) * CHUNK_SAMPLES : (step - i + 1) * CHUNK_SAMPLES]
            out_ref[i].append(model.infer([chunk], cache=ref[i], **STREAM_CFG)[0]["text"])
            if batcher.can_batch(bat[i], chunk, False):
                items.append((i, chunk))
            else:
                out_bat[i].append(model.infer([chunk], cache=bat[i], **STREAM_CFG)[0]["text"])
        for (i, _), text in zip(items, batcher.step([(bat[i], c) for i, c in items]), strict=True):
            out_bat[i].append(text)
    assert out_bat == out_ref
    assert sum(len(t) for texts in out_ref for t in texts) > 0


def test_itn_and_hotword_strings() -> None:
    try:
        import wetext  # noqa: F401

        assert itn("一百二十三", "zh") == "123"
    except ImportError:
        assert itn("一百二十三", "zh") == "一百二十三"  # documented no-op without wetext
    assert hotword_arg(["达摩院 魔搭", "http://x.y/h.txt", "words.txt"]) == "达摩院 魔搭"
    assert hotword_arg([]) is None


# --- cross-session batching and shared features: every fast path equals FunASR's own path
def _speechlike(seconds: float, seed: int) -> np.ndarray:
    """Utterances (the test clips, or tones) with pauses, rotated per seed."""
    audio, _ = speech_audio()
    return np.roll(audio, seed * 7919)[: int(seconds * SAMPLE_RATE)].copy()


# What "equal" means for the caches FunASR carries from step to step. Batched and per-session
# float kernels are not bit-identical: the batch size and the CPU's instruction set pick
# different matmul/conv kernels whose sums round differently. Measured on the dev CPU: after 7
# streaming steps the batched caches differ by at most ~2e-6 on values up to ~3 (a few float32
# ulps). BATCH_TOL allows ~100x that; a real fault (a wrong row, a stale cache slice, a missed
# step) moves values by 0.1-1. Texts, token counts and VAD segments must stay exactly equal.
BATCH_TOL = {"rtol": 1e-4, "atol": 1e-5}
# Same kernels on the same shapes (per-session re-implementations of FunASR's code): bit for bit.
EXACT = {"rtol": 0.0, "atol": 0.0}


def same_tree(a: Any, b: Any, tol: dict[str, float]) -> bool:
    """Deep equality of caches: float tensors/arrays within `tol` (allclose), everything else
    (shapes, integers, flags, lists, dicts, objects' attributes) exactly."""
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            return False
        return torch.allclose(a, b, **tol) if a.is_floating_point() else torch.equal(a, b)
    if isinstance(a, np.ndarray):
        if not isinstance(b, np.ndarray) or a.shape != b.shape or a.dtype != b.dtype:
            return False
        return bool(np.allclose(a, b, **tol) if a.dtype.kind == "f" else np.array_equal(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_tree(a[k], b[k], tol) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same_tree(x, y, tol) for x, y in zip(a, b, strict=True))
    if hasattr(a, "__dict__") and not isinstance(a, type):
        return type(a) is type(b) and same_tree(vars(a), vars(b), tol)
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=tol["rtol"], abs_tol=tol["atol"])
    return bool(a == b)


@pytest.mark.parametrize("chunk_ms", [600, 240])
def test_vad_batched_step_equals_per_session_inference(
    tiny_models: dict[str, Path], chunk_ms: int
) -> None:
    backend = backend_for(tiny_models, funasr_chunk_ms=chunk_ms)
    assert backend.vad is not None and backend._vad_batcher is not None
    size = backend.chunk_samples
    n, chunks = 5, 8400 // chunk_ms  # 8.4 s of audio per session
    audios = [_speechlike(chunks * chunk_ms / 1000, i) for i in range(n)]
    ref = [backend.new_vad_cache(300 + 150 * i) for i in range(n)]
    bat = [backend.new_vad_cache(300 + 150 * i) for i in range(n)]
    stores = [backend.frame_store() for _ in range(n)]
    out_ref: list[list] = [[] for _ in range(n)]
    out_bat: list[list] = [[] for _ in range(n)]
    batched = 0
    for step in range(chunks + n):
        ready = [i for i in range(n) if 0 <= step - i < chunks]  # staggered starts
        items = []
        for i in ready:
            k = step - i
            chunk = audios[i][k * size : (k + 1) * size]
            res = backend.vad.infer(
                [chunk], cache=ref[i], is_final=False, chunk_size=chunk_ms, dynamic_silence=False
            )
            out_ref[i].append([(int(b), int(e)) for b, e in res[0]["value"]])
            items.append(_Step(bat[i], chunk, False, stores[i], k * size))
        batched += sum(backend._vad_batcher.can_batch(it.cache, it.audio, it.final) for it in items)
        for i, segs in zip(ready, backend._vad_batch(items), strict=True):
            out_bat[i].append(segs)
    assert batched >= n * (chunks - 2)  # the steady state really went through the batcher
    assert out_bat == out_ref
    assert sum(len(s) for segs in out_ref for s in segs) >= n  # end points happened
    for r, b in zip(ref, bat, strict=True):  # and the caches FunASR goes on with are the same
        assert same_tree(r["stats"], b["stats"], BATCH_TOL)
        assert same_tree(r["encoder"], b["encoder"], BATCH_TOL)
        assert same_tree(r["frontend"], b["frontend"], EXACT)  # per session, FunASR's own ops


@pytest.mark.parametrize("chunk_ms", [600, 240])
def test_first_and_steady_stream_steps_batched_equal_inference(
    tiny_models: dict[str, Path], chunk_ms: int
) -> None:
    """_stream_batch (first steps of 1-2 chunks batched after FunASR's own cache init, then
    steady steps) against ParaformerStreaming.inference per session, at the default chunk and
    at FUNASR_CHUNK_MS=240."""
    backend = backend_for(tiny_models, funasr_chunk_ms=chunk_ms)
    assert backend.streaming is not None
    size, cfg = backend.chunk_samples, backend.stream_cfg
    n, steps = 4, 4200 // chunk_ms  # 4.2 s of audio per session
    audios = [_speechlike(6.0, i + 3) for i in range(n)]
    ref: list[dict] = [{} for _ in range(n)]
    bat: list[dict] = [{} for _ in range(n)]
    stores = [backend.frame_store() for _ in range(n)]
    vads = [backend.new_vad_cache(800) for _ in range(n)]
    texts_ref: list[list[str]] = [[] for _ in range(n)]
    texts_bat: list[list[str]] = [[] for _ in range(n)]
    first = [1 + i % 2 for i in range(n)]  # chunks in each session's first step
    pos = [0] * n
    for step in range(steps):
        items, who = [], []
        for i in range(n):
            take = first[i] if step == 0 else 1
            audio = audios[i][pos[i] : pos[i] + take * size]
            for k in range(take):  # the VAD fills the shared frames first, as in a stream
                c = audio[k * size : (k + 1) * size]
                start = pos[i] + k * size
                backend._vad_batch([_Step(vads[i], c, False, stores[i], start)])
            res = backend.streaming.infer([audio], cache=ref[i], is_final=False, **cfg)
            texts_ref[i].append(res[0]["text"])
            items.append(_Step(bat[i], audio, False, stores[i], pos[i]))
            who.append(i)
            pos[i] += len(audio)
        for i, text in zip(who, backend._stream_batch(items), strict=True):
            texts_bat[i].append(text)
    assert texts_bat == texts_ref
    assert sum(len(t) for texts in texts_ref for t in texts) > 0
    for r, b in zip(ref, bat, strict=True):
        assert same_tree(r["encoder"], b["encoder"], BATCH_TOL)
        assert same_tree(r["decoder"], b["decoder"], BATCH_TOL)
    assert sum(s.hits for s in stores if s is not None) > 0  # frames came from the VAD's


def test_cif_chunk_equals_funasr_predictor(tiny_models: dict[str, Path]) -> None:
    from engines.asr.funasr.batch import cif_chunk

    model = backend_for(tiny_models).streaming
    assert model is not None
    predictor = model.model.predictor
    torch.manual_seed(3)
    n, dim = 6, predictor.cif_output.in_features
    ref = [{"chunk_size": [5, 10, 5], "cif_hidden": torch.zeros(1, 1, dim),
            "cif_alphas": torch.zeros(1, 1)} for _ in range(n)]  # fmt: skip
    bat = [dict(c) for c in ref]
    fired = 0
    for _ in range(8):
        enc = [torch.randn(1, 20, dim) * 2 for _ in range(n)]
        with torch.no_grad():
            want = [predictor.forward_chunk(e, c) for e, c in zip(enc, ref, strict=True)]
            got = cif_chunk(predictor, enc, bat)
        # FunASR's operations in FunASR's order on per-session shapes: bit for bit
        for (embeds, tok, *_), (g_embeds, g_n), r, b in zip(want, got, ref, bat, strict=True):
            assert int(tok.max()) == g_n
            if g_n:
                assert torch.equal(embeds[:, :g_n], g_embeds)
            assert torch.equal(r["cif_hidden"], b["cif_hidden"])
            assert torch.equal(r["cif_alphas"], b["cif_alphas"])
            fired += g_n
    assert fired > 0


@pytest.mark.parametrize("role", ["vad", "streaming"])
def test_online_frontend_equals_funasr_frontend(tiny_models: dict[str, Path], role: str) -> None:
    from funasr.utils.load_utils import extract_fbank

    from engines.asr.funasr.frontend import online_features

    backend = backend_for(tiny_models)
    model = backend.vad if role == "vad" else backend.streaming
    assert model is not None
    fe, with_wave = model.kwargs["frontend"], role == "vad"
    audio = _speechlike(16.0, 5)
    rng = np.random.default_rng(2)
    ref: dict = {}
    got: dict = {}
    pos, fast = 0, 0
    while pos < len(audio) - 20000:
        size = CHUNK_SAMPLES if rng.random() < 0.7 else int(rng.integers(100, 20000))
        x = torch.from_numpy(audio[pos : pos + size].copy())
        pos += size
        want, _ = extract_fbank(
            [x],
            data_type="sound",
            frontend=fe,
            cache=ref,
            is_final=False,
            return_waveform=with_wave,
        )
        out = online_features(fe, got, x, with_wave)
        if out is None:
            out, _ = extract_fbank(
                [x], data_type="sound", frontend=fe, cache=got, is_final=False,
                return_waveform=with_wave,
            )  # fmt: skip
        else:
            fast += 1
        assert torch.equal(want, out)  # the same operations on the same values: bit for bit
        assert same_tree(ref, got, EXACT)
    assert fast >= 10


def test_fast_fbank_matches_funasr_fbank() -> None:
    from funasr.utils import fbank as funasr_fbank

    from engines.asr.funasr.fbank import kaldi_fbank

    opts = {"num_mel_bins": 80, "frame_length": 25, "frame_shift": 10, "dither": 0.0,
            "energy_floor": 0.0, "window_type": "hamming", "sample_frequency": 16000}  # fmt: skip
    for wave in (_speechlike(3.0, 1), np.zeros(9920, np.float32)):
        x = torch.from_numpy(wave * 32768)[None]
        want = funasr_fbank.fbank(x, **opts)
        got = kaldi_fbank(x, **opts)
        assert got is not None and got.shape == want.shape
        assert float((got - want).abs().max()) < 1e-3  # float32 rounding of the same algorithm
    for kind in ("povey", "hanning", "rectangular"):
        x = torch.from_numpy(_speechlike(1.0, 2) * 32768)[None]
        o = opts | {"window_type": kind, "num_mel_bins": 23}
        got = kaldi_fbank(x, **o)
        assert got is not None and float((got - funasr_fbank.fbank(x, **o)).abs().max()) < 1e-3
    assert kaldi_fbank(x, **(opts | {"dither": 1.0})) is None  # not covered: FunASR computes


@pytest.fixture
def fbank_mode(request: pytest.FixtureRequest) -> Any:
    """Sets the process-wide fbank implementation for one test, then back to the default."""
    from engines.asr.funasr.fbank import install

    install(fast=request.param)
    yield request.param
    install(fast=Settings().funasr_fbank == "fast")


@pytest.mark.parametrize("fbank_mode", [True, False], indirect=True, ids=["fast", "funasr"])
def test_frame_store_serves_exact_frames_and_checks_samples(fbank_mode: bool) -> None:
    """A frame from the store equals the frame computed afresh from any span holding it."""
    from funasr.frontends import wav_frontend

    from engines.asr.funasr.fbank import FrameStore, Source, frames_from

    kaldi = wav_frontend.kaldi
    opts = {"num_mel_bins": 80, "frame_length": 25, "frame_shift": 10, "dither": 0.0,
            "energy_floor": 0.0, "window_type": "hamming", "sample_frequency": 16000}  # fmt: skip
    audio = torch.from_numpy(_speechlike(4.0, 4) * 32768)
    store = FrameStore()
    for k in range(5):  # the VAD's view: input_cache (320) + 9600 new samples per chunk
        start = 0 if k == 0 else k * CHUNK_SAMPLES - 320
        with frames_from(Source(store, start, start, write=True)):
            kaldi.fbank(audio[start : (k + 1) * CHUNK_SAMPLES][None], **opts)
    for start, size in ((9600, 9600), (19200 - 320, 9920), (2400, 30000), (160, 400)):
        wave = audio[start : start + size][None]
        hits = store.hits
        with frames_from(Source(store, start - 400, start + 400)):
            shared = kaldi.fbank(wave, **opts)
        assert store.hits == hits + 1
        # computed afresh over a different span (another number of frames): FunASR's own fbank
        # computes frame by frame; the fast one in row-batched ops, agreeing to float rounding.
        # A frame from a wrong position would be off by O(1) in log-mel.
        fresh = kaldi.fbank(wave, **opts)
        assert torch.allclose(shared, fresh, rtol=1e-6, atol=1e-5)
    other = audio[9600:19200].clone()
    other[500] += 1.0  # one sample differs: never served from the store
    hits = store.hits
    with frames_from(Source(store, 9600, 9600)):
        kaldi.fbank(other[None], **opts)
    assert store.hits == hits
    store.keep_from(40000)
    assert store.s0 >= 40000 - 160 and len(store.frames)


def test_finals_are_decoded_alone(tiny_models: dict[str, Path]) -> None:
    """A 2-pass final never depends on which other sessions ended a sentence with it."""
    from engines.asr.funasr.backend import _Final

    backend = backend_for(tiny_models)
    audio = _speechlike(20.0, 6)
    clips = [audio[s * 16000 : s * 16000 + (2 + s % 3) * 16000 + 977 * s] for s in range(5)]
    opts = AsrParams(enable_punctuation=False)
    together = backend._final_batch([_Final(c, "", opts) for c in clips])
    alone = [backend._final_batch([_Final(c, "", opts)])[0] for c in clips]
    assert together == alone
    assert together == [t.replace("<unk>", "") for t in backend._decode(clips, None, pad=False)]


@pytest.mark.asyncio
async def test_scheduler_gathers_batches_but_never_delays_a_lone_request() -> None:
    from engines.asr.funasr.scheduler import BatchScheduler

    calls: list[int] = []
    live = {"n": 1}

    async def run(fn: Any, items: list[int]) -> list[int]:
        return fn(items)  # type: ignore[no-any-return]

    def fn(items: list[int]) -> list[int]:
        calls.append(len(items))
        return [i * 2 for i in items]

    sched = BatchScheduler("t", run, fn, max_batch=8, wait_s=0.5, target=lambda: live["n"])
    t = time.monotonic()
    assert await sched.submit(3) == 6
    assert time.monotonic() - t < 0.1  # target 1: served at once
    live["n"] = 4
    t = time.monotonic()
    results = await asyncio.gather(*(sched.submit(i) for i in range(4)))
    assert results == [0, 2, 4, 6] and calls[-1] == 4  # one batch, as soon as all 4 came
    assert time.monotonic() - t < 0.1
    live["n"] = 10
    t = time.monotonic()
    assert await asyncio.gather(*(sched.submit(i) for i in range(3))) == [0, 2, 4]
    assert 0.4 < time.monotonic() - t < 1.0 and calls[-1] == 3  # waited wait_s for more


@pytest.mark.asyncio
async def test_shared_fbank_frames_change_no_result(tiny_models: dict[str, Path]) -> None:
    audio, _ = speech_audio()
    shared, _ = await run_stream(backend_for(tiny_models), audio, AsrParams())
    alone, _ = await run_stream(
        backend_for(tiny_models, funasr_share_fbank=False), audio, AsrParams()
    )
    assert key(shared) == key(alone) and check_flow(shared)


def test_capacity_is_calibrated_on_cpu(tiny_models: dict[str, Path]) -> None:
    backend = backend_for(tiny_models)
    assert backend._calibrated >= 2 and backend.capacity == backend._calibrated
    assert backend_for(tiny_models, asr_max_sessions=7).capacity == 7


# --- the FunASR releases the FunASR-internal fast paths are tested with
def test_funasr_version_gate() -> None:
    from engines.asr.funasr import compat

    assert compat.is_tested(compat.installed_funasr()), "the installed funasr is a tested one"
    lo, hi = compat.TESTED
    below = f"{lo[0]}.{lo[1]}.{lo[2] - 1}" if lo[2] else f"{lo[0]}.{lo[1] - 1}.99"
    above = f"{hi[0]}.{hi[1]}.{hi[2] + 1}"
    assert compat.is_tested(".".join(map(str, lo)) + ".post1")
    assert not compat.is_tested(below) and not compat.is_tested(above)
    assert not compat.is_tested(None) and not compat.is_tested("unknown")


@pytest.mark.asyncio
async def test_untested_funasr_runs_funasr_own_path(
    tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Outside the tested range: a warning, no shared frames, no batchers, FunASR's own inference
    per session, and the same event flow."""
    from engines.asr.funasr import compat

    monkeypatch.setattr(compat, "installed_funasr", lambda: "9.0.0")
    with caplog.at_level("WARNING", logger=compat.__name__):
        backend = load_backend(settings_for(tiny_models, asr_max_sessions=8))
    assert "funasr 9.0.0 is outside the tested range" in caplog.text
    assert not backend.internals and not backend.share_fbank
    assert backend._batcher is None and backend._vad_batcher is None
    audio, spans = speech_audio()
    events, _ = await run_stream(backend, audio, AsrParams())
    assert len(check_flow(events)) == len(spans)
    assert any(e.type == "partial" for e in events)
