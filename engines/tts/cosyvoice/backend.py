"""CosyVoiceBackend: the TTS backend interface over the upstream CosyVoice classes.

Routing, per sentence:
- preset voice (v1 CosyVoice-300M-SFT)            -> inference_sft
- cloned voice                                    -> inference_zero_shot with the cached prompt
- cloned voice, text language != prompt language,
  or a prompt without transcript                  -> inference_cross_lingual, cached prompt
- cloned voice + instructions (v2/v3)             -> inference_instruct2, cached prompt+instruction
- preset voice + instructions                     -> ValueError (v1 SFT cannot follow them)
Audio is streamed (upstream stream=True) unless speed != 1: upstream changes speed only in its
non-streaming mode, so such a sentence arrives in one piece.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from bus.schemas import VoiceDesc
from engines.tts.base import AudioPiece, PromptVoice, SynthesisOptions, TtsBackend
from engines.tts.cosyvoice import voices as fmt
from engines.tts.cosyvoice.config import CosyVoiceConfig
from engines.tts.cosyvoice.install import Upstream, import_upstream
from engines.tts.cosyvoice.models import LoadedModel, load_model
from engines.tts.cosyvoice.prompts import PromptCache, prompt_key
from engines.tts.cosyvoice.stream import ThreadStream
from funspeech.settings import Settings

log = logging.getLogger(__name__)

_SPEED_EPS = 1e-3


@dataclass(slots=True)
class _Job:
    model: LoadedModel
    method: str  # the upstream inference_* method
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    prompt: str = ""  # speaker id to process (add_zero_shot_spk) before synthesis, if any
    prompt_text: str = ""
    voice: PromptVoice | None = None


def _cuda_index(device: str) -> int | None:
    if not device.startswith("cuda"):
        return None
    return int(device.split(":", 1)[1]) if ":" in device else 0


class CosyVoiceBackend(TtsBackend):
    name = "cosyvoice"

    def __init__(self, settings: Settings, device: str, executor: Executor) -> None:
        super().__init__(executor)
        self.config = CosyVoiceConfig.from_settings(settings)
        self.device = device
        self.can_clone = self.config.mode != "sft"
        self.can_instruct = self.can_clone  # instruct2 needs a prompt voice: clone models only
        self._upstream: Upstream | None = None
        self._sft: LoadedModel | None = None
        self._clone: LoadedModel | None = None
        self._voices: list[VoiceDesc] = []
        self._slots = asyncio.Semaphore(self.capacity)
        self._prompts = PromptCache(self.config.prompt_cache, self._forget)
        self._active = 0

    # --- the interface's properties
    @property
    def sample_rate(self) -> int:
        """24000 with a clone model (v1 presets are resampled to it), 22050 presets only."""
        if self._clone is not None:
            return self._clone.sample_rate
        if self._sft is not None:
            return self._sft.sample_rate
        return 22050 if self.config.mode == "sft" else 24000

    @property
    def voices(self) -> list[VoiceDesc]:
        return self._voices

    @property
    def capacity(self) -> int:
        """Syntheses at once: TTS_MAX_SESSIONS, else 2 per GPU (about what keeps two streams
        real-time on a 24 GB card with the reference's measurements) and 1 on a CPU."""
        if self.config.max_sessions:
            return self.config.max_sessions
        return 2 if _cuda_index(self.device) is not None else 1

    def model_paths(self) -> dict[str, str]:
        """Loaded models by setting, for discovery and logs."""
        return {m.setting: str(m.path) for m in (self._sft, self._clone) if m is not None}

    def stats(self) -> dict[str, float]:
        return {
            "active": float(self._active),
            "prompts_cached": float(len(self._prompts)),
            "prompts_processed": float(self._prompts.processed),
        }

    # --- loading
    def _bind_device(self) -> None:
        """Upstream puts everything on torch's current CUDA device ('cuda'), which is per thread:
        every thread that loads or runs a model first selects this engine's GPU."""
        index = _cuda_index(self.device)
        if index is None:
            return
        import torch

        if torch.cuda.current_device() != index:
            torch.cuda.set_device(index)

    def _check_device(self) -> None:
        import torch

        if _cuda_index(self.device) is not None and not torch.cuda.is_available():
            raise RuntimeError(f"device {self.device}: torch sees no CUDA device")
        if self.device == "cpu" and torch.cuda.is_available():
            log.warning(
                "CosyVoice places its models on the GPU whenever torch sees one; for a CPU "
                "engine on a GPU host set CUDA_VISIBLE_DEVICES= for it"
            )

    def load(self) -> None:
        cfg = self.config
        self._check_device()
        self._bind_device()
        upstream = import_upstream(cfg.cosyvoice_dir)
        self._upstream = upstream
        common = {"load_trt": cfg.load_trt, "fp16": cfg.fp16}
        if cfg.mode in ("all", "sft"):
            self._sft = load_model(
                upstream, "SFT_MODEL_ID", cfg.sft_model, cfg.modelscope_path, "v1", **common
            )
            speakers = list(self._sft.model.list_available_spks())
            if not speakers:
                raise RuntimeError(f"SFT_MODEL_ID: {self._sft.path} has no preset speakers")
            self._voices = fmt.preset_voices(speakers)
        if cfg.mode in ("all", "clone"):
            self._clone = load_model(
                upstream,
                cfg.clone_setting,
                cfg.clone_model,
                cfg.modelscope_path,
                cfg.clone_kind,
                **common,
            )
        self._slots = asyncio.Semaphore(self.capacity)
        log.info(
            "CosyVoice mode=%s on %s: %s; capacity %d",
            cfg.mode,
            self.device,
            ", ".join(f"{k}={v}" for k, v in self.model_paths().items()),
            self.capacity,
        )

    def close(self) -> None:
        self._sft = self._clone = None
        if _cuda_index(self.device) is not None:
            import torch

            torch.cuda.empty_cache()

    # --- routing
    def _plan(self, text: str, voice: str | PromptVoice, options: SynthesisOptions) -> _Job:
        if not text.strip():
            raise ValueError("empty text")
        if not options.speed > 0:
            raise ValueError(f"speed must be positive, got {options.speed}")
        mode = self.config.mode
        if isinstance(voice, str):
            if self._sft is None:
                raise ValueError(
                    f"preset voice {voice!r} needs CosyVoice-300M-SFT, which TTS_MODEL_MODE="
                    f"{mode} does not load: use a cloned voice or TTS_MODEL_MODE=all"
                )
            if voice not in {v.id for v in self._voices}:
                presets = ", ".join(v.id for v in self._voices)
                raise ValueError(f"unknown preset voice {voice!r}; presets: {presets}")
            if options.instructions:
                raise ValueError(
                    "instructions (prompt) apply to cloned voices only: the CosyVoice-300M-SFT "
                    f"preset {voice!r} cannot follow them"
                )
            return _Job(self._sft, "inference_sft", (text, voice), {})
        if self._clone is None:
            raise ValueError(
                f"cloned voice {voice.id!r} needs a clone model (CosyVoice2/3), which "
                f"TTS_MODEL_MODE={mode} does not load: set TTS_MODEL_MODE=all or clone"
            )
        model, kind = self._clone, self._clone.kind
        if options.instructions and options.instructions.strip():
            instr = fmt.instruct_text(kind, options.instructions)
            key = prompt_key(voice, kind, instr)
            # the cached entry carries the instruction as prompt text: upstream's instruct2
            # with a speaker id takes it from there (and ignores its instruct argument)
            return _Job(model, "inference_instruct2", (text, instr, ""), {}, key, instr, voice)
        transcript = voice.text.strip()
        processed = fmt.zero_shot_prompt_text(kind, transcript)
        key = prompt_key(voice, kind, processed)
        text_lang = fmt.base_language(options.language) or fmt.detect_language(text)
        prompt_lang = fmt.base_language(voice.language) or fmt.detect_language(transcript)
        if not transcript or (text_lang and prompt_lang and text_lang != prompt_lang):
            text = fmt.cross_lingual_text(kind, text)
            return _Job(model, "inference_cross_lingual", (text, ""), {}, key, processed, voice)
        return _Job(model, "inference_zero_shot", (text, "", ""), {}, key, processed, voice)

    # --- prompt processing
    def _process_prompt(self, job: _Job) -> None:
        """add_zero_shot_spk in the generation's prompt form (runs in the executor)."""
        assert job.voice is not None and self._upstream is not None
        self._bind_device()
        audio = np.ascontiguousarray(job.voice.audio, dtype=np.float32).reshape(-1)
        sr = job.voice.sample_rate
        model = job.model.model
        if self._upstream.prompt_as_path:
            if sr < 16000:  # upstream refuses prompts below 16 kHz
                audio, sr = soxr.resample(audio, sr, 16000).astype(np.float32), 16000
            with tempfile.NamedTemporaryFile(suffix=".wav") as f:
                sf.write(f.name, audio, sr, subtype="FLOAT")
                model.add_zero_shot_spk(job.prompt_text, f.name, job.prompt)
        else:
            import torch

            speech = soxr.resample(audio, sr, 16000).astype(np.float32) if sr != 16000 else audio
            model.add_zero_shot_spk(job.prompt_text, torch.from_numpy(speech)[None], job.prompt)
        log.info("processed the prompt of voice %s (%s)", job.voice.id, job.prompt)

    def _forget(self, key: str) -> None:
        """Drop an evicted prompt from the clone model's speaker table (upstream keeps it in
        `frontend.spk2info` and has no call to remove one)."""
        model = self._clone.model if self._clone is not None else None
        table = getattr(getattr(model, "frontend", None), "spk2info", None)
        if isinstance(table, dict):
            table.pop(key, None)

    # --- synthesis
    def _producer(self, job: _Job, speed: float) -> Callable[[], Iterator[np.ndarray]]:
        stream = abs(speed - 1.0) < _SPEED_EPS
        out_rate = self.sample_rate

        def produce() -> Iterator[np.ndarray]:
            self._bind_device()
            method = getattr(job.model.model, job.method)
            kwargs = {**job.kwargs, "stream": stream, "speed": 1.0 if stream else speed}
            if job.prompt:
                kwargs["zero_shot_spk_id"] = job.prompt
            rs = None
            if job.model.sample_rate != out_rate:
                rs = soxr.ResampleStream(job.model.sample_rate, out_rate, 1, dtype="float32")
            gen = method(*job.args, **kwargs)
            try:
                for out in gen:
                    audio = out["tts_speech"].detach().float().cpu().numpy().reshape(-1)
                    if rs is not None:
                        audio = rs.resample_chunk(audio)
                    if audio.size:
                        yield audio
                if rs is not None:
                    tail = rs.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
                    if tail.size:
                        yield tail
            finally:
                gen.close()

        return produce

    async def synthesize(
        self, text: str, voice: str | PromptVoice, options: SynthesisOptions
    ) -> AsyncIterator[AudioPiece]:
        job = self._plan(text, voice, options)
        await self._slots.acquire()
        pinned = handed = False
        loop = asyncio.get_running_loop()

        def finish() -> None:
            self._active -= 1
            if pinned:
                self._prompts.release(job.prompt)
            self._slots.release()

        try:
            if job.prompt:
                await self._prompts.acquire(
                    job.prompt,
                    lambda: loop.run_in_executor(self.executor, self._process_prompt, job),
                )
                pinned = True
            self._active += 1
            ts = ThreadStream(
                self.executor,
                self._producer(job, options.speed),
                finish,
                self.config.chunk_timeout,
            )
            ts.start()
            handed = True
        finally:
            if not handed:
                if pinned:
                    self._prompts.release(job.prompt)
                self._slots.release()
        try:
            async for audio in ts:
                yield AudioPiece(audio=audio)
        finally:
            ts.stop()
