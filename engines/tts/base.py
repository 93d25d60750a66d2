"""The TTS backend interface: one per task, every TTS backend module implements it.

The engine owns everything around the model: it splits the request text into sentences
(engines/tts/text.py), asks the backend for one sentence at a time, and turns the float audio the
backend yields into what the client asked for (volume, pitch, sample rate, container format;
engines/tts/post.py and engines/tts/encode.py). A backend only turns one sentence of text into
float32 mono audio at its own `sample_rate`, as soon as it has some.

Backend methods are called on the engine's event loop and must not block it: inference runs in the
executor the backend is given (`run_blocking`, or a thread feeding an asyncio queue for streaming).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from bus.schemas import VoiceDesc, Word


@dataclass(slots=True)
class PromptVoice:
    """A cloned voice from the voice store: the prompt recording and its transcript."""

    id: str
    audio: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int
    text: str  # what is said in `audio`
    language: str | None = None  # of the prompt, when known


@dataclass(slots=True)
class SynthesisOptions:
    speed: float = 1.0  # 0.5..2.0: >1 faster (from NLS speech_rate or OpenAI speed)
    instructions: str | None = None  # natural-language style prompt (can_instruct backends)
    language: str | None = None  # language of the text ("zh", "en", ...) when known


@dataclass(slots=True)
class AudioPiece:
    """Audio as the backend produces it. `words` carry times in ms from the start of the
    sentence's audio (not of this piece); a backend without word timings leaves it empty."""

    audio: np.ndarray  # float32 mono at the backend's sample_rate
    words: list[Word] = field(default_factory=list)


class TtsBackend(abc.ABC):
    """A loaded synthesizer on one device. `load` runs once, in a thread, before serving."""

    name: str = "base"
    can_clone: bool = False  # synthesizes PromptVoice (zero-shot cloning)
    can_instruct: bool = False  # honours SynthesisOptions.instructions

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    @property
    @abc.abstractmethod
    def sample_rate(self) -> int:
        """Rate of the audio `synthesize` yields."""

    @property
    @abc.abstractmethod
    def voices(self) -> list[VoiceDesc]:
        """Preset voices this backend speaks, with the aliases that map to each."""

    @property
    @abc.abstractmethod
    def capacity(self) -> int:
        """Syntheses this engine runs at once (an honest figure for its device)."""

    @abc.abstractmethod
    def load(self) -> None: ...

    @abc.abstractmethod
    def synthesize(
        self, text: str, voice: str | PromptVoice, options: SynthesisOptions
    ) -> AsyncIterator[AudioPiece]:
        """One sentence of text -> audio pieces, yielded as soon as each is ready (the first
        before the sentence is done where the model can stream). `voice` is a preset id from
        `voices` (aliases already resolved by the engine) or a cloned voice. Raises ValueError
        for something the backend cannot do (the message says what), never substitutes a voice.
        """

    def stats(self) -> dict[str, float]:
        """Live load figures for discovery."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release models."""

    async def run_blocking(self, fn: Callable[..., object], *args: object) -> object:
        """Run blocking work (inference) in the backend's executor, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
