"""One realtime FunASR session: fixed chunks (FUNASR_CHUNK_MS, 600 ms by default), streaming
FSMN-VAD end points, streaming Paraformer partials per sentence, and a 2-pass final per sentence
(offline Paraformer on the sentence's exact VAD span, then CT-Punc and ITN)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from bus.schemas import AsrEvent, AsrParams
from engines.asr.base import SAMPLE_RATE, Emit, StreamingAsr
from engines.asr.buffer import AudioBuffer

if TYPE_CHECKING:
    from engines.asr.funasr.backend import FunAsrBackend

log = logging.getLogger(__name__)

_MS = SAMPLE_RATE // 1000
_IDLE_KEEP = 3 * 9600  # audio kept with no sentence open (1.8 s): VAD starts look back
_FRAME_KEEP = 800  # fbank frames kept before that: frontends re-read up to ~400 samples back


@dataclass
class _Sentence:
    begin_ms: int
    stream_from: int  # sample where streaming input starts (on the chunk grid, <= begin)
    index: int = 0  # 0 until the sentence passes the near-field gate and "begin" is sent
    cache: dict = field(default_factory=dict)
    fed_until: int = 0
    text: str = ""
    partial: str = ""


class FunAsrStream(StreamingAsr):
    def __init__(self, backend: FunAsrBackend, options: AsrParams, emit: Emit) -> None:
        self._b = backend
        self.options = options
        self._emit = emit
        self._chunk = backend.chunk_samples
        self._buf = AudioBuffer()  # audio fed; [_pos, end) waits for a whole chunk
        self._pos = 0  # samples pulled into chunks: the stream's clock
        self._vad_cache = backend.new_vad_cache(options.max_sentence_silence_ms)
        self._frames = backend.frame_store()  # fbank frames shared by the three frontends
        self._sentence: _Sentence | None = None
        self._index = 0
        self._done = False  # single_sentence finished, or finish() ran
        self._closed = False

    @property
    def active(self) -> bool:
        return not (self._done or self._closed)

    # --- StreamingAsr
    async def feed(self, audio: np.ndarray) -> None:
        if self._closed or self._done or len(audio) == 0:
            return
        self._buf.append(np.asarray(audio, dtype=np.float32).reshape(-1))
        while self._buf.end - self._pos >= self._chunk and not (self._closed or self._done):
            await self._process(self._buf.slice(self._pos, self._pos + self._chunk), final=False)

    async def finish(self) -> None:
        if self._closed or self._done:
            self._done = True
            return
        await self._process(self._buf.slice(self._pos, self._buf.end), final=True)
        if self._sentence is not None and not self._closed:
            await self._close_sentence(self._pos // _MS)
        self._done = True

    def control(self, options: AsrParams) -> None:
        if options.max_sentence_silence_ms != self.options.max_sentence_silence_ms:
            self._b.set_vad_silence(self._vad_cache, options.max_sentence_silence_ms)
        self.options = options

    def close(self) -> None:
        self._closed = True
        self._sentence = None
        self._buf.clear()
        self._vad_cache = {}
        if self._frames is not None:
            self._frames.clear()

    # --- internals
    def _send(self, event: AsrEvent) -> None:
        if not self._closed:
            self._emit(event)

    def _audio(self, start: int, end: int) -> np.ndarray:
        """Kept audio already pulled into chunks, in [start, end)."""
        return self._buf.slice(start, min(end, self._pos))

    async def _process(self, chunk: np.ndarray, final: bool) -> None:
        self._pos += len(chunk)
        rms = float(np.sqrt(np.mean(np.square(chunk)))) if len(chunk) else 0.0
        start = self._pos - len(chunk)
        segments = await self._b.vad_step(self._vad_cache, chunk, final, self._frames, start)
        if self._closed:
            return
        for i, (beg, end) in enumerate(segments):
            if beg >= 0:
                if self._sentence is not None:
                    await self._close_sentence(beg)
                grid = (beg * _MS // self._chunk) * self._chunk
                self._sentence = _Sentence(beg, max(grid, self._buf.start))
            # at the end of audio the last sentence runs to the last sample (closed below)
            if end >= 0 and self._sentence is not None and (not final or i < len(segments) - 1):
                await self._close_sentence(end)
        s = self._sentence
        # the 2-pass final decodes the last sentence right below: no partial for the tail
        stream = not (final and self._b.has_offline)
        if s is not None and not self._closed and not self._done:
            if not s.index:
                if self._gate(rms, open_sentence=False):
                    self._begin(s)
                    if stream:
                        await self._stream(s, self._audio(s.stream_from, self._pos))
            elif stream and self._gate(rms, open_sentence=True):
                await self._stream(s, chunk)
        self._trim()
        if final and s is not None and self._sentence is s and not self._closed:
            await self._close_sentence(self._pos // _MS)

    def _gate(self, rms: float, open_sentence: bool) -> bool:
        """Near-field filter: quiet (far-field) chunks start no sentence and are not decoded;
        60 % of the threshold applies while a sentence is open."""
        cfg = self._b.config
        if not cfg.nearfield_filter:
            return True
        threshold = cfg.nearfield_rms_threshold * (0.6 if open_sentence else 1.0)
        if rms >= threshold:
            return True
        if cfg.nearfield_filter_log:
            log.debug("nearfield filter: chunk rms %.4f < %.4f, not decoded", rms, threshold)
        return False

    def _begin(self, s: _Sentence) -> None:
        self._index += 1
        s.index = self._index
        s.fed_until = s.stream_from
        self._send(AsrEvent(type="begin", index=s.index, time_ms=s.begin_ms, begin_ms=s.begin_ms))

    async def _stream(self, s: _Sentence, audio: np.ndarray) -> None:
        if not self._b.has_streaming or len(audio) == 0:
            return
        if self._b.has_offline and not self.options.enable_intermediate_result:
            return  # no partials wanted and the final comes from the 2-pass decode
        delta = await self._b.stream_step(
            s.cache, audio, False, self._frames, self._pos - len(audio)
        )
        s.fed_until = self._pos
        if self._closed or not delta:
            return
        s.text += delta
        if not self.options.enable_intermediate_result or self._sentence is not s:
            return
        text = await self._b.partial_text(s.text, self.options)
        if text and text != s.partial and not self._closed:
            s.partial = text
            now = self._pos // _MS
            self._send(
                AsrEvent(type="partial", index=s.index, time_ms=now, begin_ms=s.begin_ms, text=text)
            )

    async def _close_sentence(self, end_ms: int) -> None:
        s, self._sentence = self._sentence, None
        if s is None:
            return
        end_ms = max(end_ms, s.begin_ms)
        audio = self._audio(s.begin_ms * _MS, end_ms * _MS)
        if not s.index:  # never passed the gate while open: judge the whole span once
            rms = float(np.sqrt(np.mean(np.square(audio)))) if len(audio) else 0.0
            if not self._gate(rms, open_sentence=False):
                return
            self._begin(s)
        if self._b.has_offline:  # 2-pass: the offline model re-decodes the exact VAD span
            begin = max(s.begin_ms * _MS, self._buf.start)
            text = await self._b.final_text(audio, None, self.options, self._frames, begin)
        else:  # streaming only: flush the rest of the sentence through the streaming model
            rest = self._audio(s.fed_until, end_ms * _MS)
            start = max(s.fed_until, self._buf.start)
            tail = await self._b.stream_step(s.cache, rest, True, self._frames, start)
            text = await self._b.final_text(None, s.text + tail, self.options)
        self._send(
            AsrEvent(type="end", index=s.index, time_ms=end_ms, begin_ms=s.begin_ms, text=text)
        )
        if self.options.single_sentence:
            self._done = True

    def _trim(self) -> None:
        s = self._sentence
        keep_from = s.stream_from if s is not None else self._pos - _IDLE_KEEP
        if s is not None:
            keep_from = min(keep_from, s.begin_ms * _MS)
        self._buf.drop_before(keep_from)
        if self._frames is not None:
            self._frames.keep_from(keep_from - _FRAME_KEEP)
