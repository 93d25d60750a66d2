"""A probe ASR backend for the bridge/bus benchmark (bench/bridge_bus.py). It decodes nothing;
it measures. Not a product backend: no setting selects it.

Every benchmark chunk carries its send time (time.monotonic_ns(), int64 little-endian) in its
first 8 bytes, i.e. its first 4 int16 samples. The engine turns int16 into float32 exactly
(x / 32768), so the stream recovers the stamp bit for bit and logs (stamp, receive time).
CLOCK_MONOTONIC is system-wide on Linux, so stamps from another process compare directly.

Events: "begin" and a "partial" at the first chunk, a partial every PARTIAL_EVERY chunks after
it (its text is the emit time in monotonic ns), and an "end" on finish().
"""

from __future__ import annotations

import time
from concurrent.futures import Executor, ThreadPoolExecutor

import numpy as np

from bus.schemas import AsrEvent, AsrParams, ModelDesc
from engines.asr.base import AsrBackend, Emit, StreamingAsr

PARTIAL_EVERY = 10


class LatencyLog:
    """Chunk stamps and their receive times (monotonic ns), appended on the hot path."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.received: list[int] = []

    def clear(self) -> None:
        self.sent = []
        self.received = []

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array(self.sent, dtype=np.int64), np.array(self.received, dtype=np.int64)


def stamp_of(audio: np.ndarray) -> int:
    """The monotonic_ns stamp in a chunk's first 4 samples (float32 = int16 / 32768)."""
    raw = (audio[:4] * 32768.0).astype("<i2").tobytes()
    return int.from_bytes(raw, "little", signed=True)


def stamped(stamp_ns: int, body: bytes) -> bytes:
    """A chunk: the stamp as its first 8 bytes, then body (the rest of the chunk)."""
    return stamp_ns.to_bytes(8, "little", signed=True) + body


class ProbeStream(StreamingAsr):
    def __init__(self, options: AsrParams, emit: Emit, log: LatencyLog) -> None:
        self.options = options
        self.emit = emit
        self.log = log
        self.chunks = 0
        self.samples = 0

    async def feed(self, audio: np.ndarray) -> None:
        now = time.monotonic_ns()
        if audio.size < 4:
            return
        self.log.sent.append(stamp_of(audio))
        self.log.received.append(now)
        if self.chunks % PARTIAL_EVERY == 0:
            time_ms = self.samples // 16
            if self.chunks == 0:
                self.emit(AsrEvent(type="begin", index=1, time_ms=time_ms))
            if self.options.enable_intermediate_result:
                text = str(time.monotonic_ns())
                self.emit(AsrEvent(type="partial", index=1, time_ms=time_ms, text=text))
        self.chunks += 1
        self.samples += audio.size

    async def finish(self) -> None:
        if self.chunks:
            end = self.samples // 16
            self.emit(AsrEvent(type="end", index=1, time_ms=end, text="probe", confidence=1.0))

    def control(self, options: AsrParams) -> None:
        self.options = options

    def close(self) -> None:
        pass


class ProbeAsrBackend(AsrBackend):
    """One shared LatencyLog for all streams of this backend."""

    name = "probe"

    def __init__(self, capacity: int = 10000, executor: Executor | None = None) -> None:
        super().__init__(executor or ThreadPoolExecutor(1, thread_name_prefix="probe"))
        self._capacity = capacity
        self.log = LatencyLog()

    @property
    def models(self) -> list[ModelDesc]:
        return [ModelDesc(id="probe", name="Probe (benchmark only)", languages=["*"], default=True)]

    @property
    def capacity(self) -> int:
        return self._capacity

    def load(self) -> None:
        pass

    def open_stream(self, options: AsrParams, emit: Emit) -> StreamingAsr:
        return ProbeStream(options, emit, self.log)

    async def transcribe(self, audio: np.ndarray, options: AsrParams) -> list[AsrEvent]:
        end = audio.size // 16
        return [AsrEvent(type="end", index=1, time_ms=end, text="probe", confidence=1.0)]
