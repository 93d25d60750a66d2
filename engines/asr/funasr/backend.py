"""FunASR backend: streaming Paraformer + FSMN-VAD + 2-pass offline Paraformer + CT-Punc.

Model calls never run on the event loop. With `stream_batching` on (default), the streaming
steps (one chunk each: FUNASR_CHUNK_MS, 600 ms by default), VAD steps and sentence finals of
all sessions go through one batch scheduler each, so concurrent sessions share forward passes
(see batch.py); off, every call is its own executor job. The fast paths that re-implement
FunASR internals run only on a tested FunASR release (compat.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from bus.schemas import AsrEvent, AsrParams, ModelDesc
from engines.asr.base import SAMPLE_RATE, AsrBackend, Emit, StreamingAsr
from engines.asr.chinese import to_script
from engines.asr.funasr.batch import StreamBatcher, chunk_samples, postprocess, stream_config
from engines.asr.funasr.compat import internals_usable
from engines.asr.funasr.fbank import FrameStore, Source, frames_from
from engines.asr.funasr.fbank import install as install_fbank_sharing
from engines.asr.funasr.models import LoadedModel, load_model, to_float32
from engines.asr.funasr.scheduler import BatchScheduler
from engines.asr.funasr.stream import FunAsrStream
from engines.asr.funasr.text import hotword_arg, itn, safe_punc_input
from engines.asr.funasr.vad import VadBatcher
from funspeech.settings import FunAsrSettings

log = logging.getLogger(__name__)

MODEL_ID = "paraformer-large"
UNK = "<unk>"  # the tokenizer's unknown-token text; never shown to clients
DEFAULT_SESSIONS = {"cpu": 0, "cuda": 32}  # cpu: 0 -> calibrated at load (see capacity)
# CPU capacity calibration (see _calibrate): the share of one core the engine may plan to use,
# and engine time per session and 600 ms of audio besides the model steps (bus messages, event
# loop, session bookkeeping; measured ~1.5 ms on the tiny models, docs/benchmarks.md)
CPU_BUDGET = 0.75
SESSION_OVERHEAD_MS = 1.5


@dataclass(slots=True)
class _Final:
    audio: np.ndarray | None  # None: text is already decoded (streaming-only mode)
    text: str
    options: AsrParams
    frames: FrameStore | None = None  # the session's fbank frames, audio starting at `start`
    start: int = 0


@dataclass(slots=True)
class _Step:
    """One VAD or streaming step of one session: `audio` starts at absolute sample `start`."""

    cache: dict
    audio: np.ndarray
    final: bool
    frames: FrameStore | None = None
    start: int = 0


def _cached_len(cache: dict, key: str) -> int:
    t = cache.get(key)
    return int(t.shape[-1]) if t is not None and t.numel() else 0


def _input_start(cache: dict, start: int) -> int:
    """Absolute sample where the waveform the model's frontend fbanks next begins: the samples
    the model and its frontend carry over come before `start`."""
    return (
        start
        - _cached_len(cache, "prev_samples")
        - _cached_len(cache.get("frontend") or {}, "input_cache")
    )


class FunAsrBackend(AsrBackend):
    name = "funasr"

    def __init__(self, config: FunAsrSettings, device: str, executor: Executor) -> None:
        super().__init__(executor)
        self.config = config
        self.device = device
        self.mode = config.model_mode
        self.batching = config.stream_batching
        self.stream_cfg = stream_config(config.chunk_ms)
        self.chunk_samples = chunk_samples(self.stream_cfg)
        self.chunk_ms = config.chunk_ms
        self.streaming: LoadedModel | None = None
        self.offline: LoadedModel | None = None
        self.vad: LoadedModel | None = None
        self.punc: LoadedModel | None = None
        self.punc_realtime: LoadedModel | None = None
        self._batcher: StreamBatcher | None = None
        self._vad_batcher: VadBatcher | None = None
        self._streams: weakref.WeakSet[FunAsrStream] = weakref.WeakSet()
        self._scheds: dict[str, BatchScheduler[Any, Any]] = {}
        self.share_fbank = False
        self.internals = False  # FunSpeech's FunASR-internal fast paths in use (compat.py)
        self._rt_executor: ThreadPoolExecutor | None = None
        self._calibrated = 0

    # --- loading
    def _wanted(self) -> list[tuple[str, str, str]]:
        """(role, env name, model setting) of every model this mode loads."""
        cfg, mode = self.config, self.mode
        roles: list[tuple[str, str, str]] = []
        if mode in ("all", "realtime"):
            roles.append(("streaming", "FUNASR_REALTIME_MODEL", cfg.realtime_model))
        if mode in ("all", "offline"):
            roles.append(("offline", "FUNASR_OFFLINE_MODEL", cfg.offline_model))
        roles += [("vad", "VAD_MODEL", cfg.vad_model), ("punc", "PUNC_MODEL", cfg.punc_model)]
        if mode in ("all", "realtime") and cfg.enable_realtime_punc:
            roles.append(("punc_realtime", "PUNC_REALTIME_MODEL", cfg.punc_realtime_model))
        return roles

    def load(self) -> None:
        cfg = self.config
        self.internals = internals_usable()
        hooked = self.internals and install_fbank_sharing(fast=cfg.fbank == "fast")
        self.share_fbank = hooked and cfg.share_fbank
        ncpu = cfg.ncpu or 1  # see FUNASR_NCPU in docs/configuration.md
        for role, setting, value in self._wanted():
            model = load_model(role, setting, value, cfg.modelscope_path, self.device, ncpu)
            setattr(self, role, model)
        if self.streaming is not None and self.internals:
            kwargs = dict(self.streaming.kwargs, **self.stream_cfg)
            self._batcher = StreamBatcher(self.streaming.model, kwargs)
        if self.vad is not None and self.internals:
            self._vad_batcher = VadBatcher(self.vad.model, dict(self.vad.kwargs), self.chunk_ms)
        if not cfg.max_sessions:
            self._calibrate()
        log.info(
            "streaming chunk %d ms; fbank: %s, %s across the VAD / streaming / 2-pass frontends",
            self.chunk_ms,
            "fast torch kaldi_fbank" if hooked and cfg.fbank == "fast" else "FunASR's own",
            "shared" if self.share_fbank else "not shared",
        )
        if cfg.realtime_threads:
            self._rt_executor = ThreadPoolExecutor(
                cfg.realtime_threads, thread_name_prefix="funasr-rt"
            )
        if self.batching:
            mb, wait = cfg.max_batch, cfg.batch_wait_ms / 1000
            live, run = self.live_streams, self._run_realtime
            self._scheds = {
                "vad": BatchScheduler("vad", run, self._vad_batch, mb, wait, live),
                "stream": BatchScheduler("stream", run, self._stream_batch, mb, wait, live),
                "final": BatchScheduler("final", run, self._final_batch, mb),
            }

    def close(self) -> None:
        for sched in self._scheds.values():
            sched.close()
        if self._rt_executor is not None:
            self._rt_executor.shutdown(wait=False, cancel_futures=True)
        self.streaming = self.offline = self.vad = self.punc = self.punc_realtime = None

    # --- AsrBackend
    @property
    def models(self) -> list[ModelDesc]:
        cfg = self.config
        return [
            ModelDesc(
                id=MODEL_ID,
                name="Paraformer-large (FunASR)",
                languages=["zh", "en"],
                description="FunASR Paraformer: streaming + 2-pass offline, FSMN-VAD, CT-Punc",
                default=True,
                supports_realtime=self.mode in ("all", "realtime"),
                offline_path=cfg.offline_model if self.mode != "realtime" else None,
                realtime_path=cfg.realtime_model if self.mode != "offline" else None,
            )
        ]

    @property
    def capacity(self) -> int:
        """ASR_MAX_SESSIONS, else 32 on a GPU and on a CPU what the load-time calibration
        measured for these models (see _calibrate); one per core without a streaming model."""
        if self.config.max_sessions:
            return self.config.max_sessions
        if self.device.startswith("cuda"):
            return DEFAULT_SESSIONS["cuda"]
        return self._calibrated or max(2, os.cpu_count() or 1)

    def _calibrate(self) -> None:
        """CPU capacity from the loaded models: time the realtime work of 8 synthetic sessions
        (batched VAD + streaming steps of the configured chunk, and a 2-pass final), add the
        per-session engine overhead and fit as many sessions as CPU_BUDGET of one core carries
        (the engine's Python work runs on one core). Logged; ASR_MAX_SESSIONS overrides it."""
        if self.streaming is None or self.vad is None or self.device.startswith("cuda"):
            return
        c = self.chunk_samples
        n, steps = 8, max(6, 6 * 9600 // c)  # at least 3.6 s of audio
        t = np.arange(c * steps) / SAMPLE_RATE
        rng = np.random.default_rng(0)
        audio = 0.1 * np.sin(2 * np.pi * 220 * t) * (1.2 + np.sin(2 * np.pi * 3 * t))
        audio = (audio + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
        vad = [self.new_vad_cache(800) for _ in range(n)]
        caches: list[dict] = [{} for _ in range(n)]
        stores = [self.frame_store() for _ in range(n)]
        step_s = 0.0
        for k in range(steps):
            chunk = audio[k * c : (k + 1) * c]
            t0 = time.thread_time()
            self._vad_batch([_Step(vad[i], chunk, False, stores[i], k * c) for i in range(n)])
            self._stream_batch([_Step(caches[i], chunk, False, stores[i], k * c) for i in range(n)])
            if k >= steps // 2:
                step_s += time.thread_time() - t0
        step_ms = step_s * 1000 / (n * (steps - steps // 2))  # per session and chunk
        final_ms = 0.0
        if self.offline is not None:
            t0 = time.thread_time()
            self._final_batch([_Final(audio, "", AsrParams())])
            final_ms = (time.thread_time() - t0) * 1000
        # per session and second of audio: the steps, a sentence end every ~5 s (its frames
        # are shared, this clip's are not) and the engine's own work
        per_s = step_ms * 1000 / self.chunk_ms + final_ms / 5 + SESSION_OVERHEAD_MS / 0.6
        self._calibrated = max(2, int(CPU_BUDGET * 1000 / per_s))
        log.info(
            "capacity %d realtime sessions: %.2f ms engine time per session and second of audio "
            "(%d ms steps %.2f ms each, a 2-pass final of %.1f s %.2f ms every 5 s, overhead "
            "%.1f ms per 0.6 s) in %.0f%% of one core; ASR_MAX_SESSIONS overrides",
            self._calibrated,
            per_s,
            self.chunk_ms,
            step_ms,
            len(audio) / SAMPLE_RATE,
            final_ms,
            SESSION_OVERHEAD_MS,
            CPU_BUDGET * 100,
        )

    @property
    def has_streaming(self) -> bool:
        return self.streaming is not None

    @property
    def has_offline(self) -> bool:
        return self.offline is not None

    def _check_model(self, options: AsrParams) -> None:
        if options.model not in (None, "", MODEL_ID):
            raise ValueError(f"model {options.model!r} is not served by the funasr backend")

    def open_stream(self, options: AsrParams, emit: Emit) -> StreamingAsr:
        self._check_model(options)
        if self.streaming is None or self.vad is None:
            raise RuntimeError(
                f"realtime recognition is off: ASR_MODEL_MODE={self.mode} loads no streaming model"
            )
        stream = FunAsrStream(self, options, emit)
        self._streams.add(stream)
        return stream

    async def transcribe(self, audio: np.ndarray, options: AsrParams) -> list[AsrEvent]:
        self._check_model(options)
        if self.offline is None:
            raise RuntimeError(
                f"one-shot recognition is off: ASR_MODEL_MODE={self.mode} loads no offline model"
            )
        return await self.run_blocking(self._transcribe_sync, to_float32(audio), options)  # type: ignore[return-value]

    def live_streams(self) -> int:
        """Realtime streams still taking audio."""
        return sum(1 for s in self._streams if s.active)

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {
            "sessions": float(self.live_streams()),
            "batching": float(self.batching),
        }
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
        return (await self._run_realtime(fn, [item]))[0]  # type: ignore[index]

    async def _run_realtime(self, fn: Callable[..., object], *args: object) -> object:
        """Realtime model work (VAD, streaming, 2-pass finals) runs on its own thread(s):
        torch releases the GIL around every op, so with several Python threads doing small
        model steps the GIL changes hands at each op, which costs more than the ops (see
        FUNASR_REALTIME_THREADS)."""
        if self._rt_executor is None:
            return await self.run_blocking(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._rt_executor, fn, *args)

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

    def frame_store(self) -> FrameStore | None:
        """A session's shared fbank frames (None when sharing is off)."""
        return FrameStore() if self.share_fbank else None

    async def vad_step(
        self,
        cache: dict,
        chunk: np.ndarray,
        final: bool,
        frames: FrameStore | None = None,
        start: int = 0,
    ) -> list[tuple[int, int]]:
        item = _Step(cache, chunk, final, frames, start)
        return await self._call("vad", self._vad_batch, item)  # type: ignore[no-any-return]

    async def stream_step(
        self,
        cache: dict,
        audio: np.ndarray,
        final: bool,
        frames: FrameStore | None = None,
        start: int = 0,
    ) -> str:
        item = _Step(cache, audio, final, frames, start)
        return await self._call("stream", self._stream_batch, item)  # type: ignore[no-any-return]

    async def final_text(
        self,
        audio: np.ndarray | None,
        text: str | None,
        opts: AsrParams,
        frames: FrameStore | None = None,
        start: int = 0,
    ) -> str:
        item = _Final(audio, text or "", opts, frames, start)
        return await self._call("final", self._final_batch, item)  # type: ignore[no-any-return]

    async def partial_text(self, text: str, options: AsrParams) -> str:
        text = to_script(text.replace(UNK, ""), self.config.chinese_script)
        if not text or self.punc_realtime is None or not options.enable_punctuation:
            return text
        return await self.run_blocking(self._punctuate, self.punc_realtime, text)  # type: ignore[return-value]

    # --- blocking batch functions (executor threads)
    def _vad_sources(self, it: _Step) -> tuple[Source, ...]:
        """The VAD is the first to see new audio: it computes the frames and stores them."""
        if it.frames is None:
            return ()
        at = _input_start(it.cache, it.start)
        return (Source(it.frames, at, at, write=True),)

    def _vad_batch(self, items: list[_Step]) -> list[list[tuple[int, int]]]:
        assert self.vad is not None
        out: list[list[tuple[int, int]]] = [[] for _ in items]
        vb = self._vad_batcher
        fast = [
            i
            for i, it in enumerate(items)
            if len(items) > 1 and vb is not None and vb.can_batch(it.cache, it.audio, it.final)
        ]
        if fast:
            assert vb is not None
            with self.vad.lock:  # the VAD model keeps per-call state on the module
                done = vb.step(
                    [(items[i].cache, items[i].audio) for i in fast],
                    [self._vad_sources(items[i]) for i in fast],
                )
            for i, segs in zip(fast, done, strict=True):
                out[i] = segs
        batched = set(fast)
        for n, it in enumerate(items):
            if len(it.audio) == 0 or n in batched:
                continue
            with frames_from(*self._vad_sources(it)):
                res = self.vad.infer(
                    [to_float32(it.audio)],
                    cache=it.cache,
                    is_final=it.final,
                    chunk_size=self.chunk_ms,
                    dynamic_silence=False,
                )
            out[n] = [(int(b), int(e)) for b, e in res[0]["value"]]
        return out

    def _batch_pieces(self, it: _Step) -> list[np.ndarray] | None:
        """The chunk-sized pieces the batcher can run this step as, or None (the model's own
        inference runs it). A session's first step (an empty cache, the sentence's audio so far
        in whole chunks) is batched too: the cache is initialised as the model's inference
        would, and its pieces run in successive batched rounds."""
        bt = self._batcher
        if bt is None or it.final:
            return None
        if bt.can_batch(it.cache, it.audio, it.final):
            return [it.audio]
        c = self.chunk_samples
        n = len(it.audio) // c
        if bt.supported and not it.cache and n and len(it.audio) == n * c:
            assert self.streaming is not None
            self.streaming.model.init_cache(it.cache, **bt.kwargs)
            return [it.audio[k * c : (k + 1) * c] for k in range(n)]
        return None

    def _stream_batch(self, items: list[_Step]) -> list[str]:
        assert self.streaming is not None
        texts = [""] * len(items)
        work: list[tuple[int, list[np.ndarray]]] = []
        for i, it in enumerate(items):
            pieces = self._batch_pieces(it) if len(items) > 1 else None
            if pieces is not None:
                work.append((i, pieces))
                continue
            sources = ()
            if it.frames is not None:
                lo = _input_start(it.cache, it.start)
                sources = (Source(it.frames, lo, it.start + len(it.audio)),)
            with frames_from(*sources):
                res = self.streaming.infer(
                    [to_float32(it.audio)], cache=it.cache, is_final=it.final, **self.stream_cfg
                )
            texts[i] = res[0]["text"]
        if not work:
            return texts
        assert self._batcher is not None
        tokens: dict[int, list[str]] = {i: [] for i, _ in work}
        for r in range(max(len(pieces) for _, pieces in work)):
            run = [(i, pieces[r]) for i, pieces in work if r < len(pieces)]
            srcs = []
            for i, _ in run:
                it = items[i]
                at = _input_start(it.cache, it.start + r * self.chunk_samples)
                srcs.append((Source(it.frames, at, at),) if it.frames is not None else ())
            done = self._batcher.step_tokens([(items[i].cache, a) for i, a in run], srcs)
            for (i, _), toks in zip(run, done, strict=True):
                tokens[i].extend(toks)
        for i, toks in tokens.items():
            texts[i] = postprocess(toks)
        return texts

    def _final_batch(self, items: list[_Final]) -> list[str]:
        texts = [it.text for it in items]
        todo = [i for i, it in enumerate(items) if it.audio is not None and len(it.audio)]
        by_hotwords: dict[str | None, list[int]] = {}
        for i in todo:
            by_hotwords.setdefault(self._hotword(items[i].options), []).append(i)
        for hw, idx in by_hotwords.items():
            sources = [
                Source(items[i].frames, items[i].start, items[i].start)  # type: ignore[arg-type]
                for i in idx
                if items[i].frames is not None
            ]
            with frames_from(*sources):
                decoded = self._decode(
                    [items[i].audio for i in idx],  # type: ignore[misc]
                    hw,
                    pad=self.config.batch_finals,
                )
            for i, text in zip(idx, decoded, strict=True):
                texts[i] = text
        return [self._post(text, it.options) for text, it in zip(texts, items, strict=True)]

    def _hotword(self, options: AsrParams) -> str | None:
        """Hotwords reach models that take them (SeACo/contextual Paraformer offline models);
        plain and streaming Paraformer have no hotword input, so there they are ignored."""
        if self.offline is None or not hasattr(self.offline.model, "generate_hotwords_list"):
            return None
        return hotword_arg(options.hotwords)

    def _decode(self, audios: list[np.ndarray], hotword: str | None, pad: bool = True) -> list[str]:
        """Offline Paraformer over several clips, padded into batches of <= batch_s seconds.
        pad=False decodes each clip on its own: FunASR's CIF predictor convolves over the
        encoder output past a clip's end, which in a padded batch is not zero, so a padded
        clip's text can differ from the clip decoded alone (and a realtime final must not depend
        on which other sessions ended a sentence at the same moment)."""
        assert self.offline is not None
        out = [""] * len(audios)
        order = sorted(range(len(audios)), key=lambda i: len(audios[i]))
        limit = self.config.offline_batch_s * SAMPLE_RATE
        batch: list[int] = []
        for i in [*order, None]:
            full = i is None or not pad or len(audios[i]) * (len(batch) + 1) > limit
            if batch and full:
                extra = {"hotword": hotword} if hotword else {}
                res = self.offline.infer([to_float32(audios[j]) for j in batch], **extra)
                for j, r in zip(batch, res, strict=True):
                    out[j] = r.get("text", "")
                batch = []
            if i is not None:
                batch.append(i)
        return out

    def _post(self, text: str, options: AsrParams) -> str:
        text = to_script(text.replace(UNK, ""), self.config.chinese_script)
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

    def _transcribe_sync(self, audio: np.ndarray, options: AsrParams) -> list[AsrEvent]:
        """VAD segments -> batched offline decode -> punctuation/ITN, one `end` event per segment.
        Without enable_voice_detection, audio up to FUNASR_ONESHOT_VAD_S is decoded whole."""
        total_ms = len(audio) * 1000 // SAMPLE_RATE
        if len(audio) == 0:
            return []
        use_vad = options.enable_voice_detection or total_ms > self.config.oneshot_vad_s * 1000
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
                segments.append(
                    AsrEvent(
                        type="end",
                        index=len(segments) + 1,
                        text=text,
                        begin_ms=b,
                        time_ms=min(e, total_ms),
                    )
                )
        return segments
