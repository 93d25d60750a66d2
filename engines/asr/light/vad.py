"""Energy (RMS) voice activity detection for the light ASR engine: numpy only, cheap enough to run
on the event loop (one vectorised RMS per chunk, then a few Python steps per 20 ms frame).

Decisions per frame (hysteresis):
- noise floor: the minimum frame RMS over the last 3 s (speech has gaps between syllables, so the
  minimum follows the background, and a steady noise raises it within the window), >= `min_floor`.
- speech starts after `start_ms` of consecutive frames above max(gate, 4 x floor): `gate` is the
  near-field gate (ASR_NEARFIELD_RMS_THRESHOLD when the filter is on, else 0) so quiet far-field
  talk never opens a sentence.
- speech continues while frames stay above max(gate / 2, 2 x floor); it ends after `silence_ms`
  below that, at the end of the last voiced frame; it is cut at `max_speech_s` (a new sentence
  opens at once if speech goes on).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(slots=True)
class VadEvent:
    kind: Literal["start", "end"]
    pos: int  # sample index from the start of the stream


class EnergyVad:
    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        frame_ms: int = 20,
        silence_ms: int = 800,
        start_ms: int = 60,
        max_speech_s: float = 25.0,
        gate: float = 0.0,
        min_floor: float = 5e-4,
        floor_window_s: float = 3.0,
    ) -> None:
        self.frame = sample_rate * frame_ms // 1000
        self.frame_ms = frame_ms
        self.silence_ms = silence_ms
        self.start_frames = max(1, start_ms // frame_ms)
        self.max_speech = int(max_speech_s * sample_rate)
        self.gate = gate
        self.min_floor = min_floor
        self._hist: deque[float] = deque(maxlen=max(1, int(floor_window_s * 1000 / frame_ms)))
        self._rest = np.zeros(0, np.float32)
        self.pos = 0  # samples consumed into whole frames
        self.in_speech = False
        self.speech_start = 0
        self.last_voiced_end = 0
        self.gated_frames = 0  # frames loud enough for the adaptive floor but under the gate
        self._run = 0
        self._run_start = 0
        self.trailing_silence_ms = 0

    @property
    def floor(self) -> float:
        return max(self.min_floor, min(self._hist)) if self._hist else self.min_floor

    def process(self, audio: np.ndarray) -> list[VadEvent]:
        data = np.concatenate((self._rest, audio)) if len(self._rest) else audio
        n = len(data) // self.frame
        self._rest = data[n * self.frame :].copy()
        if n == 0:
            return []
        frames = data[: n * self.frame].reshape(n, self.frame).astype(np.float32, copy=False)
        rms = np.sqrt(np.mean(np.square(frames), axis=1))
        events: list[VadEvent] = []
        for value in rms.tolist():
            self._step(value, events)
        return events

    def flush(self) -> list[VadEvent]:
        """End of audio: close an open sentence at the end of its last voiced frame."""
        if not self.in_speech:
            return []
        self.in_speech = False
        return [VadEvent("end", self.last_voiced_end)]

    def _step(self, value: float, events: list[VadEvent]) -> None:
        floor = self.floor
        self._hist.append(value)
        start, end = self.pos, self.pos + self.frame
        self.pos = end
        if not self.in_speech:
            if value > max(self.gate, 4.0 * floor):
                if self._run == 0:
                    self._run_start = start
                self._run += 1
                if self._run >= self.start_frames:
                    self._open(self._run_start, end, events)
            else:
                self.gated_frames += int(value > 4.0 * floor)
                self._run = 0
            return
        voiced = value > max(0.5 * self.gate, 2.0 * floor)
        if voiced:
            self.last_voiced_end = end
            self.trailing_silence_ms = 0
        else:
            self.trailing_silence_ms += self.frame_ms
        if self.trailing_silence_ms >= self.silence_ms:
            self.in_speech = False
            self._run = 0
            events.append(VadEvent("end", self.last_voiced_end))
        elif end - self.speech_start >= self.max_speech:
            events.append(VadEvent("end", end if voiced else self.last_voiced_end))
            self.in_speech = False
            self._run = 0
            if voiced:
                self._open(end, end, events)

    def _open(self, start: int, voiced_end: int, events: list[VadEvent]) -> None:
        self.in_speech = True
        self.speech_start = start
        self.last_voiced_end = voiced_end
        self.trailing_silence_ms = 0
        self._run = 0
        events.append(VadEvent("start", start))
