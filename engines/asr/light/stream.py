"""One realtime stream of the light engine: energy-VAD sentences, re-decoded partials of the open
sentence, one final decode per sentence, events in order (see backend.py's docstring)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bus.schemas import AsrEvent, AsrParams
from engines.asr.base import SAMPLE_RATE, Emit, StreamingAsr
from engines.asr.buffer import AudioBuffer
from engines.asr.light.text import confidence, polish, words
from engines.asr.light.vad import EnergyVad

if TYPE_CHECKING:
    from engines.asr.light.backend import LightAsrBackend

log = logging.getLogger(__name__)

PREROLL = SAMPLE_RATE * 3 // 10  # audio decoded before a sentence's first voiced frame
POSTROLL = SAMPLE_RATE // 5  # and after its last one
MIN_PARTIAL = SAMPLE_RATE // 2  # no partial before 0.5 s of speech
MAX_PENDING_FINALS = 3  # feed() waits while a stream has more finals outstanding


def _ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE


def _samples(ms: float) -> int:
    return int(ms * SAMPLE_RATE / 1000)


@dataclass(slots=True, eq=False)
class _Sentence:
    start: int  # first voiced sample
    pre: int  # samples decoded before start
    end: int = 0  # end of the last voiced frame
    index: int = 0  # set when "begin" is emitted
    text: str = ""  # last partial
    ended: bool = False  # its end was emitted (or decided empty): no partial after it


class LightStream(StreamingAsr):
    def __init__(self, backend: LightAsrBackend, options: AsrParams, emit: Emit) -> None:
        self._b, self._emit = backend, emit
        cfg = backend.config
        gate = cfg.nearfield_rms_threshold if cfg.nearfield_filter else 0.0
        self._vad = EnergyVad(max_speech_s=cfg.max_sentence_s, gate=gate)
        self._script = cfg.chinese_script
        self.control(options)
        self._buf = AudioBuffer()
        self._open: _Sentence | None = None
        self._last_end = 0
        self._index = 0
        self._last_partial = 0
        self._partial: asyncio.Task[None] | None = None
        self._partial_started = False  # it holds a decode slot (else it waits for one)
        self._finals: deque[asyncio.Task[None]] = deque()
        self._done = False  # single_sentence: the first end was emitted
        self._closed = False

    def control(self, options: AsrParams) -> None:
        self._model, lang = self._b.model_for(options)
        tiny = self._b.loaded.get("whisper-tiny.en")  # English partials at half the CPU cost
        fast = tiny is not None and lang == "en" and self._b.config.fast_en_partials
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
        if self._partial is not None and not self._partial_started:
            self._partial.cancel()  # still waiting for a slot: it would only slow the finals
        if self._vad.gated_frames and self._b.config.nearfield_filter_log:
            quiet_s = self._vad.gated_frames * self._vad.frame_ms / 1000
            log.info("light ASR: near-field filter ignored %.1f s of quiet sound", quiet_s)
        if self._finals:  # a running partial may still go out before its sentence's end
            await asyncio.wait(set(self._finals))
        if self._partial is not None:
            self._partial.cancel()
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
        offset = max(sent.start - sent.pre, self._buf.start)
        audio = self._buf.slice(offset, sent.end + post)
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
        interval = _samples(1000 * self._b.config.partial_interval * stretch)
        if pos - max(self._last_partial, sent.start) < interval:
            return
        self._last_partial = pos
        if sched.queued > self._b.config.partial_max_queue:
            sched.counts["partials_skipped"] += 1
            return
        audio = self._buf.slice(sent.start - sent.pre, pos)
        self._partial_started = False
        self._partial = asyncio.ensure_future(self._run_partial(sent, audio, pos))

    async def _run_partial(self, sent: _Sentence, audio: np.ndarray, pos: int) -> None:
        try:
            segments = await self._b.decode(
                self._partial_model, audio, self._kw_partial, False, on_start=self._slot_taken
            )
        except Exception:
            log.exception("light ASR: partial decode failed")
            return
        text = polish("".join(s.text for s in segments), self._opts, self._script)
        if not text or self._closed or self._done or sent.ended:
            return
        # A sentence closed meanwhile still gets this partial while its final is pending: on a
        # loaded engine a partial started mid-sentence often finishes after the VAD end point.
        sent.text = text
        self._begin(sent)
        self._emit(
            AsrEvent(
                type="partial",
                index=sent.index,
                time_ms=_ms(pos),
                begin_ms=_ms(sent.start),
                text=text,
            )
        )

    def _slot_taken(self) -> None:
        self._partial_started = True

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
        sent.ended = True
        text = polish("".join(s.text for s in segments), self._opts, self._script) or sent.text
        if not text or self._closed or self._done:
            return
        self._begin(sent)
        begin, end = _ms(sent.start), _ms(sent.end)
        self._emit(
            AsrEvent(
                type="end",
                index=sent.index,
                time_ms=end,
                begin_ms=begin,
                text=text,
                confidence=confidence(segments),
                words=words(segments, _ms(offset), begin, end, self._opts, self._script),
            )
        )
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
            self._emit(AsrEvent(type="begin", index=sent.index, time_ms=begin, begin_ms=begin))
