"""Audio as it arrives on the bus -> float32 mono at the model rate, and a bounded session inbox."""

from __future__ import annotations

import asyncio
import io
from collections import deque
from typing import Generic, TypeVar

import numpy as np
import soundfile as sf
import soxr

T = TypeVar("T")


class PcmDecoder:
    """s16le mono chunks of any size (odd byte counts carried over) -> float32 at `rate_out`,
    resampled as a stream so chunk borders leave no trace."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self.rate_in = rate_in
        self.samples_in = 0
        self._carry = b""
        self._resampler = (
            soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32")
            if rate_in != rate_out
            else None
        )

    def decode(self, data: bytes) -> np.ndarray:
        data = self._carry + data if self._carry else data
        usable = len(data) - len(data) % 2
        self._carry = data[usable:]
        pcm = np.frombuffer(data, dtype="<i2", count=usable // 2)
        self.samples_in += pcm.size
        audio = pcm.astype(np.float32) / 32768.0
        if self._resampler is not None:
            audio = self._resampler.resample_chunk(audio)
        return audio

    def tail(self) -> np.ndarray:
        """What the resampler still holds, at the end of the stream."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        return self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


def decode_request(data: bytes, rate: int, fmt: str, rate_out: int) -> np.ndarray:
    """A one-shot request body: raw s16le PCM at `rate`, or a WAV/FLAC/OGG file (sniffed from
    its header whatever `fmt` says). Raises ValueError for anything else."""
    if data[:4] in (b"RIFF", b"fLaC", b"OggS") or fmt in ("wav", "flac", "ogg"):
        try:
            audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise ValueError(f"Cannot decode the {fmt} audio: {exc}") from None
        audio = audio.mean(axis=1)
    elif fmt == "pcm":
        audio = np.frombuffer(data, dtype="<i2", count=len(data) // 2).astype(np.float32) / 32768.0
    else:
        raise ValueError(f"Unsupported format '{fmt}' on the bus: send pcm, wav, flac or ogg")
    if rate != rate_out:
        audio = soxr.resample(audio, rate, rate_out).astype(np.float32)
    return audio


class Inbox(Generic[T]):
    """A session's audio (bytes) and control messages in arrival order. Audio is bounded:
    put() returns False once more than `limit` bytes wait, and the session fails instead of
    growing without end (the client's flow-control window keeps well-behaved clients below)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queued_bytes = 0
        self._items: deque[bytes | T] = deque()
        self._ready = asyncio.Event()

    def put(self, item: bytes | T) -> bool:
        if isinstance(item, bytes):
            if self.queued_bytes + len(item) > self.limit:
                return False
            self.queued_bytes += len(item)
        self._items.append(item)
        self._ready.set()
        return True

    async def get(self) -> bytes | T:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if isinstance(item, bytes):
            self.queued_bytes -= len(item)
        return item
