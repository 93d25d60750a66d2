"""Processed clone prompts, cached per engine.

Upstream's `add_zero_shot_spk` turns a prompt (audio + text) into the model inputs it needs
(speech tokens, mel features, speaker embedding) and keeps them under an id; later syntheses
name that id instead of re-processing the audio. The id is the voice id plus a hash of what was
processed, so a voice deleted and re-created with the same id but another recording is processed
anew. Entries in use are pinned; the least recently used unpinned ones are dropped past `limit`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial

import numpy as np

from engines.tts.base import PromptVoice


def prompt_key(voice: PromptVoice, kind: str, processed_text: str) -> str:
    """The upstream speaker id for one processed prompt."""
    h = hashlib.sha256()
    h.update(f"{kind}\0{voice.sample_rate}\0{processed_text}\0".encode())
    h.update(np.ascontiguousarray(voice.audio, dtype=np.float32).tobytes())
    return f"fs:{voice.id}:{h.hexdigest()[:20]}"


class PromptCache:
    def __init__(self, limit: int, forget: Callable[[str], None]) -> None:
        self.limit = limit
        self._forget = forget  # drops a key from the model's own table
        self._ready: OrderedDict[str, None] = OrderedDict()
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._pins: Counter[str] = Counter()
        self.processed = 0  # prompts processed since start

    def __len__(self) -> int:
        return len(self._ready)

    async def acquire(self, key: str, process: Callable[[], Awaitable[None]]) -> None:
        """Make `key` ready (processing it once, whoever asks meanwhile waits for that one run)
        and pin it until `release`."""
        while key not in self._ready:
            task = self._pending.get(key)
            if task is None:
                task = asyncio.ensure_future(process())
                self._pending[key] = task
                task.add_done_callback(partial(self._done, key))
            # shielded: a caller that gives up does not cancel the others' processing
            await asyncio.shield(task)
        self._ready.move_to_end(key)
        self._pins[key] += 1

    def release(self, key: str) -> None:
        self._pins[key] -= 1
        if self._pins[key] <= 0:
            del self._pins[key]
        self._evict()

    def _done(self, key: str, task: asyncio.Future[None]) -> None:
        self._pending.pop(key, None)
        if task.cancelled() or task.exception() is not None:  # exception() marks it retrieved
            return
        self._ready[key] = None
        self.processed += 1
        self._evict(keep=key)

    def _evict(self, keep: str | None = None) -> None:
        while len(self._ready) > self.limit:
            victim = next((k for k in self._ready if k != keep and not self._pins[k]), None)
            if victim is None:
                return
            del self._ready[victim]
            self._forget(victim)
