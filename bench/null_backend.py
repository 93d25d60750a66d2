"""A null ASR backend for benchmarks of the bridge and bus alone: it decodes nothing and
costs (almost) nothing. It is not a product backend and no setting selects it."""

from __future__ import annotations

import numpy as np

from engines.asr.base import (
    AsrBackend,
    AsrOptions,
    Emit,
    ModelInfo,
    Segment,
    StreamEvent,
    StreamingAsr,
)


class NullStream(StreamingAsr):
    """Reports a fixed text: a sentence per `sentence_ms` of audio, a partial per chunk."""

    def __init__(self, options: AsrOptions, emit: Emit, sentence_ms: int = 3000) -> None:
        self.emit = emit
        self.options = options
        self.sentence_ms = sentence_ms
        self.samples = 0
        self.index = 0
        self.begin_ms = 0
        self.open = False

    async def feed(self, audio: np.ndarray) -> None:
        self.samples += audio.size
        now = self.samples // 16
        if not self.open:
            self.index += 1
            self.open = True
            self.begin_ms = now
            self.emit(StreamEvent("begin", self.index, now, self.begin_ms))
        if self.options.enable_intermediate_result:
            self.emit(StreamEvent("partial", self.index, now, self.begin_ms, "null"))
        if now - self.begin_ms >= self.sentence_ms:
            self._end(now)

    def _end(self, now: int) -> None:
        self.emit(StreamEvent("end", self.index, now, self.begin_ms, "null sentence", 1.0))
        self.open = False

    async def finish(self) -> None:
        if self.open:
            self._end(self.samples // 16)

    def close(self) -> None:
        pass


class NullAsrBackend(AsrBackend):
    name = "null"

    def __init__(self, executor=None, capacity: int = 1000) -> None:  # type: ignore[no-untyped-def]
        super().__init__(executor)  # type: ignore[arg-type]
        self._capacity = capacity

    @property
    def models(self) -> list[ModelInfo]:
        return [ModelInfo("null", "Null (benchmark only)", ["*"], default=True)]

    @property
    def capacity(self) -> int:
        return self._capacity

    def load(self) -> None:
        pass

    def open_stream(self, options: AsrOptions, emit: Emit) -> StreamingAsr:
        return NullStream(options, emit)

    async def transcribe(self, audio: np.ndarray, options: AsrOptions) -> list[Segment]:
        return [Segment("null sentence", 0, audio.size // 16, 1.0)]
