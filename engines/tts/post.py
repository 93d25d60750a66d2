"""Post-processing between a TTS backend and the client: NLS/OpenAI parameter mapping, pitch,
volume and resampling, chunk by chunk.

speech_rate (NLS, -500..500): Alibaba documents the conversion from a speed multiple x to
speech_rate as (1 - 1/x) / 0.002 for x < 1 and (1 - 1/x) / 0.001 for x > 1, so -500 = 0.5x,
0 = 1x, 500 = 2x, non-linear (250 = 1.33x, -250 = 0.67x). `nls_speed` is its inverse; the speed
goes to the backend (the models change their durations, no time-stretching).
pitch_rate (NLS, -500..500): NLS gives no curve; we use the same one as a frequency factor
(-500 = an octave down, 500 = an octave up, 100 = +1.8 semitones), applied by a WSOLA time
stretch and a resample that cancel in duration.
volume (NLS, 0..100): gain volume / 50 (50 = unity, 0 = silence, 100 = +6 dB) with a soft
limiter above 0.9 full scale instead of clipping.
"""

from __future__ import annotations

import numpy as np
import soxr

OUTPUT_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
_LIMIT = 0.9


def _rate_factor(value: int, name: str) -> float:
    if not -500 <= value <= 500:
        raise ValueError(f"{name} must be in -500..500, got {value}")
    return 1.0 / (1.0 - (0.002 if value < 0 else 0.001) * value)


def nls_speed(speech_rate: int) -> float:
    """NLS speech_rate -> speed factor (>1 faster): the inverse of NLS's documented curve."""
    return _rate_factor(speech_rate, "speech_rate")


def nls_pitch(pitch_rate: int) -> float:
    """NLS pitch_rate -> pitch factor (>1 higher), on the speech_rate curve."""
    return _rate_factor(pitch_rate, "pitch_rate")


def nls_gain(volume: int) -> float:
    if not 0 <= volume <= 100:
        raise ValueError(f"volume must be in 0..100, got {volume}")
    return volume / 50.0


def openai_speed(speed: float) -> float:
    """OpenAI `speed` (0.25..4.0, 1 = normal) -> speed factor (the same scale)."""
    if not 0.25 <= speed <= 4.0:
        raise ValueError(f"speed must be in 0.25..4.0, got {speed}")
    return float(speed)


def apply_gain(audio: np.ndarray, gain: float) -> np.ndarray:
    """Gain, then `soft_limit` when it amplifies."""
    y = np.asarray(audio, np.float32) * np.float32(gain)
    return soft_limit(y) if gain > 1.0 else y


def soft_limit(audio: np.ndarray) -> np.ndarray:
    """Samples above 0.9 full scale are compressed towards 1.0, never past it (stateless per
    sample, so chunk borders need nothing); below 0.9 nothing changes."""
    y = np.array(audio, np.float32)
    mag = np.abs(y)
    over = mag > _LIMIT
    if over.any():
        soft = _LIMIT + (1 - _LIMIT) * np.tanh((mag[over] - _LIMIT) / (1 - _LIMIT))
        y[over] = np.sign(y[over]) * soft
    return y


def time_stretch(audio: np.ndarray, factor: float, rate: int) -> np.ndarray:
    """WSOLA: `factor` times longer (0.5..2), pitch unchanged. 30 ms Hann frames, 50 % overlap;
    each frame is taken where it best continues the previous one (within +-10 ms)."""
    x = np.asarray(audio, np.float32)
    frame = max(64, int(0.03 * rate)) // 2 * 2
    hop = frame // 2
    tol = int(0.01 * rate)
    n_out = round(len(x) * factor)
    if len(x) < 2 * frame or abs(factor - 1.0) < 1e-3:
        return x.copy()
    win = np.hanning(frame).astype(np.float32)
    xp = np.concatenate([np.zeros(tol, np.float32), x, np.zeros(frame + tol + hop, np.float32)])
    out = np.zeros(n_out + frame, np.float32)
    norm = np.zeros(n_out + frame, np.float32)
    prev = None
    for k in range(0, n_out // hop + 1):
        nominal = tol + int(k * hop / factor)
        if prev is None:
            pos = nominal
        else:
            want = xp[prev + hop : prev + hop + frame]
            seg = xp[nominal - tol : nominal + tol + frame]
            corr = np.correlate(seg, want, mode="valid")
            pos = nominal - tol + int(np.argmax(corr))
        out[k * hop : k * hop + frame] += xp[pos : pos + frame] * win
        norm[k * hop : k * hop + frame] += win
        prev = pos
    return (out / np.maximum(norm, 1e-3))[:n_out]


def pitch_shift(audio: np.ndarray, factor: float, rate: int) -> np.ndarray:
    """Pitch times `factor`, duration kept: stretch by `factor`, then resample back."""
    if abs(factor - 1.0) < 1e-3 or not len(audio):
        return np.asarray(audio, np.float32)
    stretched = time_stretch(audio, factor, rate)
    out = soxr.resample(stretched, rate * factor, rate, quality="HQ")
    return np.asarray(out[: len(audio)], np.float32)


class PostProcessor:
    """Backend audio -> client audio, chunk by chunk: pitch (per chunk; backends yield whole
    clauses, which start and end in silence), volume, and a streaming soxr resampler that keeps
    its filter state across chunks (no clicks at borders). `flush` returns the resampler's tail.
    """

    def __init__(
        self, in_rate: int, out_rate: int, *, volume: int = 50, pitch_rate: int = 0
    ) -> None:
        if out_rate not in OUTPUT_RATES:
            raise ValueError(f"sample_rate must be one of {OUTPUT_RATES}, got {out_rate}")
        self.in_rate, self.out_rate = in_rate, out_rate
        self.gain = nls_gain(volume)
        self.pitch = nls_pitch(pitch_rate)
        self._resampler = (
            soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")
            if in_rate != out_rate
            else None
        )

    def process(self, audio: np.ndarray) -> np.ndarray:
        x = np.asarray(audio, np.float32).reshape(-1)
        x = pitch_shift(x, self.pitch, self.in_rate)
        if self.gain != 1.0:
            x = apply_gain(x, self.gain)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x, last=False)
        return np.asarray(x, np.float32)

    def flush(self) -> np.ndarray:
        if self._resampler is None:
            return np.zeros(0, np.float32)
        return np.asarray(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
