"""FunASR backend: streaming Paraformer + FSMN-VAD + 2-pass offline Paraformer + CT-Punc.

Model calls never run on the event loop. With `funasr_stream_batching` on (default), the
600 ms streaming steps, VAD steps and sentence finals of all sessions go through one batch
scheduler each, so concurrent sessions share forward passes (see funasr_batch.py); off, every
call is its own executor job.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from engines.asr.base import (
    SAMPLE_RATE,
    AsrBackend,
    AsrOptions,
    Emit,
    ModelInfo,
    Segment,
    StreamingAsr,
)
from engines.asr.funasr_batch import StreamBatcher
from engines.asr.funasr_models import LoadedModel, load_model, to_float32
from engines.asr.funasr_scheduler import BatchScheduler
from engines.asr.funasr_stream import FunAsrStream
from engines.asr.funasr_text import hotword_arg, itn, safe_punc_input
from funspeech.settings import Settings

log = logging.getLogger(__name__)

MODEL_ID = "paraformer-large"
STREAM_CFG: dict[str, Any] = {
    "chunk_size": [0, 10, 5],
    "encoder_chunk_look_back": 4,
    "decoder_chunk_look_back": 1,
}
VAD_CHUNK_MS = 600
UNK = "<unk>"  # the tokenizer's unknown-token text; never shown to clients
DEFAULT_SESSIONS = {"cpu": 0, "cuda": 32}  # cpu: 0 -> one per core (see capacity)


@dataclass(slots=True)
class _Final:
    audio: np.ndarray | None  # None: text is already decoded (streaming-only mode)
    text: str
    options: AsrOptions


class FunAsrBackend(AsrBackend):
    name = "funasr"

    def __init__(self, settings: Settings, device: str, executor: Executor) -> None:
        super().__init__(executor)
        self.settings = settings
        self.device = device
        self.mode = settings.asr_model_mode
        self.batching = settings.funasr_stream_batching
        self.streaming: LoadedModel | None = None
        self.offline: LoadedModel | None = None
        self.vad: LoadedModel | None = None
        self.punc: LoadedModel | None = None
        self.punc_realtime: LoadedModel | None = None
        self._batcher: StreamBatcher | None = None
        self._streams: weakref.WeakSet[FunAsrStream] = weakref.WeakSet()
        self._scheds: dict[str, BatchScheduler[Any, Any]] = {}

    # --- loading
    def _wanted(self) -> list[tuple[str, str]]:
        st, mode = self.settings, self.mode
        roles: list[tuple[str, str]] = []
        if mode in ("all", "realtime"):
            roles.append(("streaming", "funasr_realtime_model"))
        if mode in ("all", "offline"):
            roles.append(("offline", "funasr_offline_model"))
        roles += [("vad", "vad_model"), ("punc", "punc_model")]
        if mode in ("all", "realtime") and st.asr_enable_realtime_punc:
            roles.append(("punc_realtime", "punc_realtime_model"))
        return roles

    def load(self) -> None:
        st = self.settings
        ncpu = st.funasr_ncpu or min(4, os.cpu_count() or 1)
        for role, setting in self._wanted():
            value = getattr(st, setting)
            model = load_model(role, setting, value, st.modelscope_path, self.device, ncpu)
            setattr(self, role, model)
        if self.streaming is not None:
            self._batcher = StreamBatcher(
                self.streaming.model, dict(self.streaming.kwargs, **STREAM_CFG)
            )
        if self.batching:
            mb = st.funasr_max_batch
            self._scheds = {
                "vad": BatchScheduler("vad", self.run_blocking, self._vad_batch, mb),
                "stream": BatchScheduler("stream", self.run_blocking, self._stream_batch, mb),
                "final": BatchScheduler("final", self.run_blocking, self._final_batch, mb),
            }

    def close(self) -> None:
        for sched in self._scheds.values():
            sched.close()
        self.streaming = self.offline = self.vad = self.punc = self.punc_realtime = None

    # --- AsrBackend
    @property
    def models(self) -> list[ModelInfo]:
        st = self.settings
        return [
            ModelInfo(
                id=MODEL_ID,
                name="Paraformer-large (FunASR)",
                languages=["zh", "en"],
                description="FunASR Paraformer: streaming + 2-pass offline, FSMN-VAD, CT-Punc",
                default=True,
                supports_realtime=self.mode in ("all", "realtime"),
                offline_path=st.funasr_offline_model if self.mode != "realtime" else None,
                realtime_path=st.funasr_realtime_model if self.mode != "offline" else None,
            )
        ]

    @property
    def capacity(self) -> int:
        """ASR_MAX_SESSIONS, else 32 on a GPU and one session per CPU core (paraformer-large's
        streaming step is compute-bound on CPU; measure with bench/funasr_engine.py)."""
        if self.settings.asr_max_sessions:
            return self.settings.asr_max_sessions
        if self.device.startswith("cuda"):
            return DEFAULT_SESSIONS["cuda"]
        return max(2, os.cpu_count() or 1)

    @property
    def has_streaming(self) -> bool:
        return self.streaming is not None

    @property
    def has_offline(self) -> bool:
        return self.offline is not None

    def _check_model(self, options: AsrOptions) -> None:
        if options.model not in (None, "", MODEL_ID):
            raise ValueError(f"model {options.model!r} is not served by the funasr backend")

    def open_stream(self, options: AsrOptions, emit: Emit) -> StreamingAsr:
        self._check_model(options)
        if self.streaming is None or self.vad is None:
            raise RuntimeError(
                f"realtime recognition is off: ASR_MODEL_MODE={self.mode} loads no streaming model"
            )
        stream = FunAsrStream(self, options, emit)
        self._streams.add(stream)
        return stream

    async def transcribe(self, audio: np.ndarray, options: AsrOptions) -> list[Segment]:
        self._check_model(options)
        if self.offline is None:
            raise RuntimeError(
                f"one-shot recognition is off: ASR_MODEL_MODE={self.mode} loads no offline model"
            )
        return await self.run_blocking(self._transcribe_sync, to_float32(audio), options)  # type: ignore[return-value]

    def stats(self) -> dict[str, float]:
        live = [s for s in self._streams if s.active]
        out: dict[str, float] = {"sessions": float(len(live)), "batching": float(self.batching)}
        for name, sched in self._scheds.items():
            out[f"{name}_queue"] = float(sched.depth)
            out[f"{name}_batches"] = float(sched.batches)
            out[f"{name}_mean_batch"] = sched.items / sched.batches if sched.batches else 0.0
            out[f"{name}_busy_s"] = round(sched.busy_s, 3)
        return out

    # --- operations used by FunAsrStream
    async def _call(self, kind: str, fn: Callable[[list[Any]], list[Any]], item: Any) -> Any:
        sched = self._scheds.get(kind)
        if sched is not None:
            return await sched.submit(item)
        return (await self.run_blocking(fn, [item]))[0]  # type: ignore[index]

    def new_vad_cache(self, silence_ms: int) -> dict:
        assert self.vad is not None
        cache: dict = {}
        self.vad.model.init_cache(cache)  # reads shared vad_opts, writes nothing shared
        self.set_vad_silence(cache, silence_ms)
        return cache

    def set_vad_silence(self, cache: dict, silence_ms: int) -> None:
        """max_sentence_silence per session: FunASR keeps the end-silence threshold in the
        cache's stats (init_cache would write it into the shared model options instead)."""
        assert self.vad is not None
        if "stats" in cache:
            opts = self.vad.model.vad_opts
            cache["stats"].max_end_sil_frame_cnt_thresh = max(
                int(silence_ms) - opts.speech_to_sil_time_thres, 0
            )

    async def vad_step(self, cache: dict, chunk: np.ndarray, final: bool) -> list[tuple[int, int]]:
        return await self._call("vad", self._vad_batch, (cache, chunk, final))  # type: ignore[no-any-return]

    async def stream_step(self, cache: dict, audio: np.ndarray, final: bool) -> str:
        return await self._call("stream", self._stream_batch, (cache, audio, final))  # type: ignore[no-any-return]

    async def final_text(self, audio: np.ndarray | None, text: str | None, opts: AsrOptions) -> str:
        return await self._call("final", self._final_batch, _Final(audio, text or "", opts))  # type: ignore[no-any-return]

    async def partial_text(self, text: str, options: AsrOptions) -> str:
        text = text.replace(UNK, "")
        if not text or self.punc_realtime is None or not options.enable_punctuation:
            return text
        return await self.run_blocking(self._punctuate, self.punc_realtime, text)  # type: ignore[return-value]

    # --- blocking batch functions (executor threads)
    def _vad_batch(self, items: list[tuple[dict, np.ndarray, bool]]) -> list[list[tuple[int, int]]]:
        assert self.vad is not None
        out = []
        for cache, chunk, final in items:
            if len(chunk) == 0:
                out.append([])
                continue
            res = self.vad.infer(
                [to_float32(chunk)],
                cache=cache,
                is_final=final,
                chunk_size=VAD_CHUNK_MS,
                dynamic_silence=False,
            )
            out.append([(int(b), int(e)) for b, e in res[0]["value"]])
        return out

    def _stream_batch(self, items: list[tuple[dict, np.ndarray, bool]]) -> list[str]:
        assert self.streaming is not None and self._batcher is not None
        texts = [""] * len(items)
        fast = []
        for i, (cache, audio, final) in enumerate(items):
            if len(items) > 1 and self._batcher.can_batch(cache, audio, final):
                fast.append(i)
                continue
            res = self.streaming.infer(
                [to_float32(audio)], cache=cache, is_final=final, **STREAM_CFG
            )
            texts[i] = res[0]["text"]
        if fast:
            done = self._batcher.step([(items[i][0], items[i][1]) for i in fast])
            for i, text in zip(fast, done, strict=True):
                texts[i] = text
        return texts

    def _final_batch(self, items: list[_Final]) -> list[str]:
        texts = [it.text for it in items]
        todo = [i for i, it in enumerate(items) if it.audio is not None and len(it.audio)]
        by_hotwords: dict[str | None, list[int]] = {}
        for i in todo:
            by_hotwords.setdefault(self._hotword(items[i].options), []).append(i)
        for hw, idx in by_hotwords.items():
            for i, text in zip(idx, self._decode([items[i].audio for i in idx], hw), strict=True):  # type: ignore[misc]
                texts[i] = text
        return [self._post(text, it.options) for text, it in zip(texts, items, strict=True)]

    def _hotword(self, options: AsrOptions) -> str | None:
        """Hotwords reach models that take them (SeACo/contextual Paraformer offline models);
        plain and streaming Paraformer have no hotword input, so there they are ignored."""
        if self.offline is None or not hasattr(self.offline.model, "generate_hotwords_list"):
            return None
        return hotword_arg(options.hotwords)

    def _decode(self, audios: list[np.ndarray], hotword: str | None) -> list[str]:
        """Offline Paraformer over several clips, padded into batches of <= batch_s seconds."""
        assert self.offline is not None
        out = [""] * len(audios)
        order = sorted(range(len(audios)), key=lambda i: len(audios[i]))
        limit = self.settings.funasr_offline_batch_s * SAMPLE_RATE
        batch: list[int] = []
        for i in [*order, None]:
            if batch and (i is None or len(audios[i]) * (len(batch) + 1) > limit):
                extra = {"hotword": hotword} if hotword else {}
                res = self.offline.infer([to_float32(audios[j]) for j in batch], **extra)
                for j, r in zip(batch, res, strict=True):
                    out[j] = r.get("text", "")
                batch = []
            if i is not None:
                batch.append(i)
        return out

    def _post(self, text: str, options: AsrOptions) -> str:
        text = text.replace(UNK, "")
        if text and options.enable_punctuation and self.punc is not None:
            text = self._punctuate(self.punc, text)
        if text and options.enable_itn:
            text = itn(text, options.language)
        return text

    def _punctuate(self, model: LoadedModel, text: str) -> str:
        if not text.strip():
            return text
        res = model.infer([safe_punc_input(text)])
        out = str(res[0].get("text", text)) if res else text
        return out.replace(UNK, "")  # CT-Punc's class 0 is written as "<unk>"

    def _transcribe_sync(self, audio: np.ndarray, options: AsrOptions) -> list[Segment]:
        """VAD segments -> batched offline decode -> punctuation/ITN, one Segment per segment.
        Without enable_voice_detection, audio up to funasr_oneshot_vad_s is decoded whole."""
        total_ms = len(audio) * 1000 // SAMPLE_RATE
        if len(audio) == 0:
            return []
        use_vad = (
            options.enable_voice_detection or total_ms > self.settings.funasr_oneshot_vad_s * 1000
        )
        if use_vad and self.vad is not None:
            cache = self.new_vad_cache(options.max_sentence_silence_ms)
            res = self.vad.infer([audio], cache=cache, is_final=True, dynamic_silence=False)
            spans = [(int(b), int(e)) for b, e in res[0]["value"] if e > b]
        else:
            spans = [(0, total_ms)]
        clips = [audio[b * SAMPLE_RATE // 1000 : e * SAMPLE_RATE // 1000] for b, e in spans]
        texts = self._decode(clips, self._hotword(options)) if clips else []
        segments = []
        for (b, e), text in zip(spans, texts, strict=True):
            text = self._post(text, options)
            if text:
                segments.append(Segment(text=text, begin_ms=b, end_ms=min(e, total_ms)))
        return segments
