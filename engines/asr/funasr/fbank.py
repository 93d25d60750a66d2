"""Fbank frames computed once per session and shared by FunASR's frontends.

One realtime session's audio goes through three FunASR frontends: FSMN-VAD's, the streaming
Paraformer's and (at each sentence end) the offline Paraformer's. All three compute the same
Kaldi fbank (80 mels, 25/10 ms frames, no dither) of the same samples, on the same 10 ms grid:
the VAD from the start of the stream, the streaming model from a chunk boundary, the offline
model from a VAD start time (10 ms units). A Kaldi fbank frame depends only on the 400 samples
of its window, so a frame computed once can stand in for every later computation of it,
bit for bit (tests check the frames and the recognition results against FunASR's own path).

How: FunASR's frontends call `kaldi.fbank(waveform, ...)` through the module global `kaldi`
of funasr.frontends.wav_frontend. `install()` wraps that module in a proxy whose `fbank`
looks the waveform up in the session's FrameStore named by the calling thread's
`frames_from(...)` context: the waveform must start on the store's frame grid and its samples
must equal the stored ones (compared, never assumed), then the stored frames are returned.
Anything else (no context, other options, dither, a miss) computes the fbank; a miss at an
exactly known position extends the store.

What computes it: FunASR's own fbank (torchaudio's kaldi.fbank when installed, else
kaldi-native-fbank, ~1 ms per 600 ms chunk here, holding the GIL), or with
FUNASR_FBANK=fast (`install(fast=True)`) `kaldi_fbank` below: the same Kaldi algorithm
(torchaudio.compliance.kaldi.fbank's) in a few vectorised torch ops, ~5x faster on this CPU.
The two agree to float32 rounding (max |diff| of log-mel ~1e-4, tests check), not bit for bit;
fast is then used for every FunASR fbank in the process, so all paths stay consistent.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

_local = threading.local()


class _Run:
    """A float32 array that grows at its end and is cut at its start without copying what it
    holds at every append (FrameStore extends its run every chunk of every session)."""

    def __init__(self) -> None:
        self._buf = np.zeros(0, np.float32)
        self._lo = self._hi = 0

    @property
    def data(self) -> np.ndarray:
        return self._buf[self._lo : self._hi]

    def reset(self, data: np.ndarray) -> None:
        self._buf = np.array(data, np.float32)
        self._lo, self._hi = 0, len(data)

    def extend(self, data: np.ndarray) -> None:
        n = len(data)
        if self._hi + n > len(self._buf):  # full: move the live part into a fresh, larger array
            live = self._hi - self._lo
            grown = np.empty((2 * (live + n), *self._buf.shape[1:]), np.float32)
            grown[:live] = self._buf[self._lo : self._hi]
            self._buf, self._lo, self._hi = grown, 0, live
        self._buf[self._hi : self._hi + n] = data
        self._hi += n

    def drop(self, n: int) -> None:
        self._lo = min(self._lo + n, self._hi)


class FrameStore:
    """A contiguous run of one session's fbank frames and the (scaled) samples they came from:
    frames[k] is the frame whose window starts at absolute sample s0 + k * shift."""

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.shift = 0
        self.win = 0
        self.s0 = 0
        self._samples = _Run()
        self._frames = _Run()
        self.hits = 0
        self.misses = 0

    @property
    def samples(self) -> np.ndarray:
        return self._samples.data

    @property
    def frames(self) -> np.ndarray:
        return self._frames.data

    @property
    def end_frame_sample(self) -> int:
        """Absolute sample where the window of the next (not yet stored) frame starts."""
        return self.s0 + len(self.frames) * self.shift

    def find(
        self, key: tuple[Any, ...], lo: int, hi: int, wave: np.ndarray, n: int
    ) -> np.ndarray | None:
        """The n frames of `wave` when it starts at an absolute sample in [lo, hi] on this
        store's grid and its samples equal the stored ones there; else None."""
        frames = self.frames
        if key != self.key or n <= 0 or not len(frames):
            return None
        shift, win, samples = self.shift, self.win, self.samples
        k_lo = max(0, -((self.s0 - lo) // shift))  # ceil((lo - s0) / shift)
        k_hi = min((hi - self.s0) // shift, len(frames) - n)
        if k_hi < k_lo:
            return None
        used = (n - 1) * shift + win
        firsts = samples[k_lo * shift : k_hi * shift + 1 : shift]
        for k in np.flatnonzero(firsts == wave[0])[::-1] + k_lo:  # latest first
            off = int(k) * shift
            if np.array_equal(samples[off : off + win], wave[:win]) and np.array_equal(
                samples[off : off + used], wave[:used]
            ):
                return frames[k : k + n]
        return None

    def put(self, key: tuple[Any, ...], start: int, wave: np.ndarray, frames: np.ndarray) -> None:
        """Frames just computed for `wave` at absolute sample `start`: extend the run when they
        continue it, else start a new run."""
        n = len(frames)
        if n == 0:
            return
        used = (n - 1) * self.shift + self.win
        if key == self.key and len(self.frames) and start == self.end_frame_sample:
            have = len(self.samples) - (start - self.s0)  # stored samples from `start` on
            if 0 <= have <= used and np.array_equal(self.samples[start - self.s0 :], wave[:have]):
                self._samples.extend(wave[have:used])
                self._frames.extend(frames)
                return
        self.key = key
        self.s0 = start
        self._samples.reset(wave[:used])
        self._frames.reset(frames)

    def keep_from(self, sample: int) -> None:
        """Forget frames whose window starts before absolute sample `sample`."""
        if not self.shift or sample <= self.s0:
            return
        drop = min((sample - self.s0) // self.shift, len(self.frames))
        if drop:
            self._frames.drop(drop)
            self._samples.drop(drop * self.shift)
            self.s0 += drop * self.shift

    def clear(self) -> None:
        self.key = None
        self._samples = _Run()
        self._frames = _Run()


@dataclass(slots=True)
class Source:
    """Where the fbank calls of this thread may find their frames: `store`, for a waveform
    starting at an absolute sample in [lo, hi]. A `write` source (lo == hi: the start is known
    exactly) adds the frames of a miss to the store; only the first consumer of new audio
    (the VAD) writes."""

    store: FrameStore
    lo: int
    hi: int
    write: bool = False


@contextlib.contextmanager
def frames_from(*sources: Source) -> Iterator[None]:
    """FunASR fbank calls made by this thread inside the block may use these stores."""
    prev = getattr(_local, "sources", None)
    _local.sources = sources
    try:
        yield
    finally:
        _local.sources = prev


# torchaudio.compliance.kaldi.fbank's defaults (FunASR's knf fallback mirrors them): two calls
# compute the same frames when their options agree after filling these in
_DEFAULTS: dict[str, Any] = {
    "blackman_coeff": 0.42,
    "channel": -1,
    "dither": 0.0,
    "energy_floor": 1.0,
    "frame_length": 25.0,
    "frame_shift": 10.0,
    "high_freq": 0.0,
    "htk_compat": False,
    "low_freq": 20.0,
    "min_duration": 0.0,
    "num_mel_bins": 23,
    "preemphasis_coefficient": 0.97,
    "raw_energy": True,
    "remove_dc_offset": True,
    "round_to_power_of_two": True,
    "sample_frequency": 16000.0,
    "snip_edges": True,
    "subtract_mean": False,
    "use_energy": False,
    "use_log_fbank": True,
    "use_power": True,
    "vtln_high": -500.0,
    "vtln_low": 100.0,
    "vtln_warp": 1.0,
    "window_type": "povey",
}


def _key(kw: dict[str, Any]) -> tuple[Any, ...] | None:
    opts = _DEFAULTS | kw
    if float(opts["dither"]) != 0.0 or opts["subtract_mean"]:
        return None  # random dither / whole-utterance mean: frames depend on more than a window
    return tuple(sorted(opts.items()))


_FAST_WINDOWS = ("hamming", "hanning", "povey", "rectangular")
_fast_tables: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor, int]] = {}


def _fast_supported(opts: dict[str, Any]) -> bool:
    return (
        float(opts["dither"]) == 0.0
        and opts["snip_edges"]
        and opts["round_to_power_of_two"]
        and opts["use_log_fbank"]
        and opts["use_power"]
        and not opts["use_energy"]
        and not opts["htk_compat"]
        and not opts["subtract_mean"]
        and float(opts["vtln_warp"]) == 1.0
        and float(opts["min_duration"]) == 0.0
        and int(opts["channel"]) in (-1, 0)
        and opts["window_type"] in _FAST_WINDOWS
    )


def _mel(f: np.ndarray | float) -> np.ndarray | float:
    return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)


def _tables(opts: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(window, mel matrix (bins, fft/2), padded size) for these options, as Kaldi makes them."""
    key = tuple(sorted(opts.items()))
    hit = _fast_tables.get(key)
    if hit is not None:
        return hit
    fs = float(opts["sample_frequency"])
    win = int(float(opts["frame_length"]) * fs / 1000)
    padded = 1 << max(0, (win - 1).bit_length())
    i = np.arange(win, dtype=np.float64)
    a = 2 * math.pi / (win - 1)
    kind = opts["window_type"]
    if kind == "hamming":
        w = 0.54 - 0.46 * np.cos(a * i)
    elif kind == "hanning":
        w = 0.5 - 0.5 * np.cos(a * i)
    elif kind == "povey":
        w = (0.5 - 0.5 * np.cos(a * i)) ** 0.85
    else:
        w = np.ones(win)
    bins, nfft = int(opts["num_mel_bins"]), padded // 2
    low, high = float(opts["low_freq"]), float(opts["high_freq"])
    if high <= 0:
        high += fs / 2
    mel_low, mel_high = float(_mel(low)), float(_mel(high))
    delta = (mel_high - mel_low) / (bins + 1)
    mel = np.asarray(_mel(fs / padded * np.arange(nfft)))
    mat = np.zeros((bins, nfft))
    for b in range(bins):
        left, center, right = (mel_low + (b + k) * delta for k in range(3))
        up = (mel - left) / (center - left)
        down = (right - mel) / (right - center)
        inside = (mel > left) & (mel < right)
        mat[b] = np.where(inside, np.where(mel <= center, up, down), 0.0)
    out = (
        torch.from_numpy(w.astype(np.float32)),
        torch.from_numpy(np.ascontiguousarray(mat.T.astype(np.float32), dtype=np.float64)),
        padded,
    )
    _fast_tables[key] = out
    return out


def kaldi_fbank(waveform: torch.Tensor, **kw: Any) -> torch.Tensor | None:
    """Kaldi log-mel fbank of a mono waveform (1, N) or (N,), as torchaudio.compliance.kaldi
    .fbank computes it, in a few vectorised ops; None for options it does not cover."""
    opts = _DEFAULTS | kw
    if not _fast_supported(opts):
        return None
    window, mel, padded = _tables(opts)
    fs = float(opts["sample_frequency"])
    shift = int(float(opts["frame_shift"]) * fs / 1000)
    x = waveform.detach().reshape(-1).to(torch.float32)
    win = len(window)
    if len(x) < win:
        return torch.zeros((0, mel.shape[1]), dtype=torch.float32)
    frames = x.unfold(0, win, shift)
    if opts["remove_dc_offset"]:
        frames = frames - frames.mean(dim=1, keepdim=True)
    coeff = float(opts["preemphasis_coefficient"])
    if coeff != 0.0:
        frames = frames - coeff * torch.cat((frames[:, :1], frames[:, :-1]), dim=1)
    spec = torch.fft.rfft(frames * window, n=padded)
    power = spec.real.square() + spec.imag.square()
    # in float64: a float32 matrix product rounds a row differently depending on how many
    # rows it has, and a frame must come out the same whichever call computes it
    energies = (power[:, : padded // 2].double() @ mel).float()
    return energies.clamp_min(torch.finfo(torch.float32).eps).log()


class _KaldiProxy:
    """Stands in for the `kaldi` module FunASR's frontends use; see the module docstring."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.fast = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def _compute(self, waveform: torch.Tensor, kw: dict[str, Any]) -> torch.Tensor:
        if self.fast and waveform.dim() <= 2 and (waveform.dim() == 1 or waveform.size(0) == 1):
            out = kaldi_fbank(waveform, **kw)
            if out is not None:
                return out
        return self._real.fbank(waveform, **kw)

    def fbank(self, waveform: torch.Tensor, **kw: Any) -> torch.Tensor:
        sources: tuple[Source, ...] | None = getattr(_local, "sources", None)
        key = _key(kw) if sources else None
        if key is None or waveform.dim() != 2 or waveform.size(0) != 1:
            return self._compute(waveform, kw)
        assert sources is not None
        opts = dict(key)
        fs = float(opts["sample_frequency"])
        shift = int(float(opts["frame_shift"]) * fs / 1000)
        win = int(float(opts["frame_length"]) * fs / 1000)
        if not opts["snip_edges"] or shift <= 0 or win <= 0:
            return self._compute(waveform, kw)
        wave = waveform.detach().reshape(-1).numpy()
        n = (len(wave) - win) // shift + 1 if len(wave) >= win else 0
        for src in sources:
            store = src.store
            if (store.shift, store.win) != (shift, win):
                continue
            frames = store.find(key, src.lo, src.hi, wave, n)
            if frames is not None:
                store.hits += 1
                return torch.from_numpy(frames.copy())
        out = self._compute(waveform, kw)
        if len(sources) == 1:
            sources[0].store.misses += 1
        for src in sources:
            if src.write and src.lo == src.hi:
                src.store.shift, src.store.win = shift, win
                src.store.put(key, src.lo, wave, out.detach().numpy())
        return out


def install(fast: bool = False) -> bool:
    """Wrap funasr.frontends.wav_frontend.kaldi once (fast: compute with kaldi_fbank); False
    when that module has no `kaldi` (another FunASR layout): then every fbank is computed by
    FunASR as before."""
    try:
        from funasr.frontends import wav_frontend
    except ImportError:
        return False
    real = getattr(wav_frontend, "kaldi", None)
    if real is None or not hasattr(real, "fbank"):
        log.info("funasr fbank sharing off: funasr.frontends.wav_frontend has no kaldi.fbank")
        return False
    if not isinstance(real, _KaldiProxy):
        real = _KaldiProxy(real)
        wav_frontend.kaldi = real
    real.fast = fast
    return True
