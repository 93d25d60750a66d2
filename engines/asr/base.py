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
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

SAMPLE_RATE = 16000


@dataclass(slots=True)
class Word:
    text: str
    begin_ms: int
    end_ms: int


@dataclass(slots=True)
class Segment:
    """One recognised sentence with its place in the audio (ms from the start of the stream)."""

    text: str
    begin_ms: int
    end_ms: int
    confidence: float | None = None
    words: list[Word] = field(default_factory=list)


@dataclass(slots=True)
class AsrOptions:
    """Per-session / per-request recognition options (NLS names in comments)."""

    model: str | None = None  # customization_id; None = the backend's default model
    language: str | None = None  # e.g. "zh", "en"; None = detect
    max_sentence_silence_ms: int = 800  # max_sentence_silence: VAD end-point silence
    enable_intermediate_result: bool = True  # partial results while a sentence is open
    enable_punctuation: bool = True  # enable_punctuation_prediction
    enable_itn: bool = False  # enable_inverse_text_normalization
    enable_words: bool = False  # word timestamps in each sentence
    enable_voice_detection: bool = False  # one-shot only: VAD segmentation before decoding
    hotwords: list[str] = field(default_factory=list)
    single_sentence: bool = False  # SpeechRecognizer: the first end point ends the stream


EventKind = Literal["begin", "partial", "end"]


@dataclass(slots=True)
class StreamEvent:
    """What a stream reports. index counts sentences from 1.

    begin:   a sentence started at begin_ms.
    partial: text so far of the open sentence; time_ms = audio processed so far.
    end:     the final text of the sentence; begin_ms..time_ms is its span.
    """

    kind: EventKind
    index: int
    time_ms: int
    begin_ms: int = 0
    text: str = ""
    confidence: float | None = None
    words: list[Word] = field(default_factory=list)


Emit = Callable[[StreamEvent], None]


@dataclass(slots=True)
class ModelInfo:
    """A model as /stream/v1/asr/models lists it."""

    id: str
    name: str
    languages: list[str]
    description: str = ""
    default: bool = False
    supports_realtime: bool = True
    offline_path: str | None = None
    realtime_path: str | None = None


class StreamingAsr(abc.ABC):
    """One realtime recognition stream. The engine never calls two methods of one stream at once."""

    @abc.abstractmethod
    async def feed(self, audio: np.ndarray) -> None:
        """Take the next audio (float32, 16 kHz). May await to push back when decoding lags."""

    @abc.abstractmethod
    async def finish(self) -> None:
        """End of audio: decode everything still buffered (the tail is never dropped),
        emit the last events, return when no more will come."""

    def control(self, options: AsrOptions) -> None:  # noqa: B027 - optional hook
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
    def models(self) -> list[ModelInfo]: ...

    @property
    @abc.abstractmethod
    def capacity(self) -> int:
        """Realtime sessions this engine admits at once (an honest figure for its device)."""

    @abc.abstractmethod
    def load(self) -> None: ...

    @abc.abstractmethod
    def open_stream(self, options: AsrOptions, emit: Emit) -> StreamingAsr: ...

    @abc.abstractmethod
    async def transcribe(self, audio: np.ndarray, options: AsrOptions) -> list[Segment]:
        """One-shot recognition of a whole recording (float32, 16 kHz)."""

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
