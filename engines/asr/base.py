"""The ASR backend interface: one per task, every backend module implements it.

Engines always hand backends 16 kHz mono float32 audio in [-1, 1] (the engine resamples and
converts). Backend methods are called on the engine's event loop and must not block it: heavy
work runs in the executor the backend is given.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np

from bus.schemas import AsrEvent, AsrParams, ModelDesc

SAMPLE_RATE = 16000

# Backends speak the bus types (bus/schemas.py): AsrParams in, AsrEvent out. A stream emits
#   begin:   a sentence (index from 1) started at begin_ms;
#   partial: text so far of the open sentence; time_ms = audio processed so far;
#   end:     the final text of the sentence; begin_ms..time_ms is its span.
Emit = Callable[[AsrEvent], None]


class StreamingAsr(abc.ABC):
    """One realtime recognition stream. The engine never calls two methods of one stream at once."""

    @abc.abstractmethod
    async def feed(self, audio: np.ndarray) -> None:
        """Take the next audio (float32, 16 kHz). May await to push back when decoding lags."""

    @abc.abstractmethod
    async def finish(self) -> None:
        """End of audio: decode everything still buffered (the tail is never dropped),
        emit the last events, return when no more will come."""

    def control(self, options: AsrParams) -> None:  # noqa: B027 - optional hook
        """Apply changed options mid-stream (NLS ControlTranscriber)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Abort: release resources at once and emit nothing more."""


class AsrBackend(abc.ABC):
    """A loaded recognizer on one device. `load` runs once, in a thread, before serving."""

    name: str = "base"

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    @property
    @abc.abstractmethod
    def models(self) -> list[ModelDesc]: ...

    @property
    @abc.abstractmethod
    def capacity(self) -> int:
        """Realtime sessions this engine admits at once (an honest figure for its device)."""

    @abc.abstractmethod
    def load(self) -> None: ...

    @abc.abstractmethod
    def open_stream(self, options: AsrParams, emit: Emit) -> StreamingAsr: ...

    @abc.abstractmethod
    async def transcribe(self, audio: np.ndarray, options: AsrParams) -> list[AsrEvent]:
        """One-shot recognition of a whole recording (float32, 16 kHz): one `end` event per
        segment, `index` from 1, `begin_ms`..`time_ms` its span."""

    def stats(self) -> dict[str, float]:
        """Live load figures for discovery (e.g. decode queue depth)."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release models."""

    async def run_blocking(self, fn: Callable[..., object], *args: object) -> object:
        """Run blocking work (inference) in the backend's executor, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


class ModelNotFound(RuntimeError):
    """A configured model is missing; the message names it and the path looked at."""
