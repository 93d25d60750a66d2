"""The audio a realtime stream keeps, addressed by absolute sample index (0 = stream start).

Both ASR backends' streams hold their recent audio here: appended as it arrives, read back by
span, and forgotten before a point once nothing will read it again. Small appends are merged
so a span spreads over few arrays; reading a span copies only the arrays it overlaps.
"""

from __future__ import annotations

import bisect

import numpy as np

_MERGE_BELOW = 4096  # samples: an append joins a last piece shorter than this


class AudioBuffer:
    def __init__(self) -> None:
        self._pieces: list[np.ndarray] = []
        self._starts: list[int] = []  # absolute index of each piece's first sample
        self.start = 0  # first sample kept
        self.end = 0  # one past the last sample appended

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, audio: np.ndarray) -> None:
        """Keep `audio` (float32, 1-D) after what is there; the array is kept, not copied."""
        if not len(audio):
            return
        if self._pieces and len(self._pieces[-1]) < _MERGE_BELOW:
            self._pieces[-1] = np.concatenate((self._pieces[-1], audio))
        else:
            self._pieces.append(audio)
            self._starts.append(self.end)
        self.end += len(audio)

    def slice(self, a: int, b: int) -> np.ndarray:
        """The kept samples in [a, b): the result starts at max(a, start) and ends at
        min(b, end)."""
        a, b = max(a, self.start), min(b, self.end)
        if b <= a:
            return np.zeros(0, np.float32)
        first = bisect.bisect_right(self._starts, a) - 1
        last = bisect.bisect_left(self._starts, b) - 1
        lo, hi = a - self._starts[first], b - self._starts[last]
        if first == last:
            return self._pieces[first][lo:hi]
        parts = [self._pieces[first][lo:], *self._pieces[first + 1 : last], self._pieces[last][:hi]]
        return np.concatenate(parts)

    def drop_before(self, pos: int) -> None:
        """Forget every sample before `pos` (exactly: `start` becomes min(pos, end))."""
        pos = min(pos, self.end)
        if pos <= self.start:
            return
        k = bisect.bisect_right(self._starts, pos) - 1
        del self._pieces[:k], self._starts[:k]
        if self._pieces:
            self._pieces[0] = self._pieces[0][pos - self._starts[0] :]
            self._starts[0] = pos
        self.start = pos

    def clear(self) -> None:
        """Forget everything; the clock (`end`) keeps its place."""
        self._pieces.clear()
        self._starts.clear()
        self.start = self.end
