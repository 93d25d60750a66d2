"""Decode uploaded audio to mono s16le PCM at its own sample rate (engines resample).

Blocking: call `decode` through `asyncio.to_thread`, never on the event loop.

The container is sniffed from magic bytes, so a WAV body sent with the NLS default
`format=pcm` still works; a body without a known header and `format=pcm` is raw PCM at the
given sample rate. wav/flac/ogg(vorbis, opus)/aiff go through libsndfile, everything else
(mp3, aac/m4a, amr, ogg speex, webm, ...) through PyAV (FFmpeg).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
import soundfile as sf
import soxr

MIN_RATE, MAX_RATE = 8000, 48000  # what engines accept
FALLBACK_RATE = 16000  # rates outside MIN_RATE..MAX_RATE are resampled to this
FORMATS = ("pcm", "wav", "opus", "speex", "amr", "mp3", "aac", "m4a", "flac", "ogg")
SOUNDFILE_CONTAINERS = ("wav", "flac", "ogg", "aiff", "caf")
PYAV_HINTS = {"mp3": "mp3", "aac": "aac", "amr": "amr", "m4a": "mp4", "flac": "flac"}


class AudioError(Exception):
    """The audio cannot be used; the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AudioTooLong(AudioError):
    def __init__(self, duration_s: float, limit_s: float) -> None:
        super().__init__(f"Audio duration {duration_s:.1f} s exceeds the {limit_s:g} s limit")
        self.duration_s = duration_s


@dataclass(slots=True)
class Pcm:
    data: bytes  # s16le mono
    sample_rate: int

    @property
    def samples(self) -> int:
        return len(self.data) // 2

    @property
    def duration_s(self) -> float:
        return self.samples / self.sample_rate


def sniff(data: bytes) -> str | None:
    """The container named by the first bytes, or None for headerless data. Only strong
    magic numbers count, so raw PCM is not mistaken for a container."""
    head = data[:16]
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b"caff":
        return "caf"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3":
        return "mp3"
    if head[:5] == b"#!AMR":
        return "amr"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if _frames_chain(data, _mp3_frame_len):
        return "mp3"
    if _frames_chain(data, _adts_frame_len):
        return "aac"
    return None


# Headerless MP3 / ADTS AAC: two consecutive valid frame headers (PCM never chains like that).
_MP3_KBPS = {
    3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1 layer III
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # MPEG-2 / 2.5
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frame_len(h: bytes) -> int:
    if h[0] != 0xFF or h[1] & 0xE0 != 0xE0:
        return 0
    version, layer = (h[1] >> 3) & 3, (h[1] >> 1) & 3
    rate_index, kbps_index = (h[2] >> 2) & 3, h[2] >> 4
    if version == 1 or layer != 1 or rate_index == 3 or kbps_index in (0, 15):
        return 0
    kbps = _MP3_KBPS[3 if version == 3 else 2][kbps_index]
    factor = 144 if version == 3 else 72
    return factor * kbps * 1000 // _MP3_RATES[version][rate_index] + ((h[2] >> 1) & 1)


def _adts_frame_len(h: bytes) -> int:
    if h[0] != 0xFF or h[1] & 0xF6 != 0xF0 or (h[2] >> 2) & 0xF > 12:
        return 0
    length = ((h[3] & 3) << 11) | (h[4] << 3) | (h[5] >> 5)
    return length if length > 7 else 0


def _frames_chain(data: bytes, frame_len: Callable[[bytes], int]) -> bool:
    first = frame_len(data[:6]) if len(data) >= 6 else 0
    if not first or len(data) < first + 6:
        return False
    return frame_len(data[first : first + 6]) > 0


def decode(
    data: bytes,
    fmt: str | None = "pcm",
    sample_rate: int = 16000,
    max_duration_s: float | None = None,
) -> Pcm:
    """Audio bytes -> mono s16le PCM at MIN_RATE..MAX_RATE Hz.

    fmt: the declared format (NLS `format`), or None when unknown (probe it). sample_rate: the
    rate of headerless PCM. max_duration_s: raise AudioTooLong past it (decoding stops early).
    """
    if not data:
        raise AudioError("Audio data is empty")
    container = sniff(data)
    if container is None and fmt == "pcm":
        pcm = Pcm(data[: len(data) - len(data) % 2], sample_rate)
        if pcm.samples == 0:
            raise AudioError("Audio data is empty")
        _check_length(pcm.duration_s, max_duration_s)
        return pcm
    if container in SOUNDFILE_CONTAINERS:
        try:
            return _decode_soundfile(data, max_duration_s)
        except AudioTooLong:
            raise
        except Exception:  # e.g. ogg speex, odd WAV codecs: let FFmpeg try
            pass
    label = container or fmt
    hint = PYAV_HINTS.get(label or "")
    if hint is not None:
        try:
            return _decode_pyav(data, hint, max_duration_s, label)
        except AudioTooLong:
            raise
        except AudioError:
            pass  # the declared format may be wrong: let FFmpeg probe
    return _decode_pyav(data, None, max_duration_s, label)


def _check_length(duration_s: float, limit_s: float | None) -> None:
    if limit_s is not None and duration_s > limit_s:
        raise AudioTooLong(duration_s, limit_s)


def _to_pcm(audio: np.ndarray, rate: int) -> Pcm:
    """float32 mono in [-1, 1] -> s16le, resampled to FALLBACK_RATE if the rate is out of range."""
    if not MIN_RATE <= rate <= MAX_RATE:
        audio = soxr.resample(audio, rate, FALLBACK_RATE)
        rate = FALLBACK_RATE
    pcm = np.clip(np.round(audio * 32768.0), -32768, 32767).astype("<i2")
    return Pcm(pcm.tobytes(), rate)


def _decode_soundfile(data: bytes, max_duration_s: float | None) -> Pcm:
    with sf.SoundFile(io.BytesIO(data)) as f:
        rate, channels = f.samplerate, f.channels
        if f.frames > 0:
            _check_length(f.frames / rate, max_duration_s)
        if channels == 1 and MIN_RATE <= rate <= MAX_RATE:
            pcm = Pcm(f.read(dtype="int16").astype("<i2").tobytes(), rate)
        else:
            audio = f.read(dtype="float32", always_2d=True).mean(axis=1)
            pcm = _to_pcm(audio.astype(np.float32), rate)
    if pcm.samples == 0:
        raise AudioError("The audio contains no samples")
    _check_length(pcm.duration_s, max_duration_s)
    return pcm


def _decode_pyav(
    data: bytes, hint: str | None, max_duration_s: float | None, label: str | None
) -> Pcm:
    what = f"{label} " if label else ""
    out = bytearray()
    rate = 0
    try:
        with av.open(io.BytesIO(data), mode="r", format=hint) as container:
            if not container.streams.audio:
                raise AudioError(f"Cannot decode the {what}audio: no audio stream found")
            stream = container.streams.audio[0]
            source_rate = stream.codec_context.sample_rate or stream.rate or FALLBACK_RATE
            rate = source_rate if MIN_RATE <= source_rate <= MAX_RATE else FALLBACK_RATE
            if container.duration and max_duration_s is not None:
                _check_length(container.duration / av.time_base, max_duration_s)
            limit = None if max_duration_s is None else int(max_duration_s * rate + 1) * 2
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            for frame in container.decode(stream):
                for chunk in resampler.resample(frame):
                    out += chunk.to_ndarray().astype("<i2").tobytes()
                if limit is not None and len(out) > limit:
                    raise AudioTooLong(len(out) / 2 / rate, max_duration_s or 0.0)
            for chunk in resampler.resample(None):
                out += chunk.to_ndarray().astype("<i2").tobytes()
    except AudioError:
        raise
    except Exception as exc:
        if not out:  # a truncated file keeps what decoded; nothing decoded is an error
            raise AudioError(f"Cannot decode the {what}audio: {_reason(exc)}") from None
    if not out:
        raise AudioError(f"Cannot decode the {what}audio: no audio samples found")
    pcm = Pcm(bytes(out), rate)
    _check_length(pcm.duration_s, max_duration_s)
    return pcm


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return str(text)[:200]
