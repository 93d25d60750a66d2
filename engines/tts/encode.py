"""Streaming audio encoders: `feed(pcm) -> bytes` as audio is produced, `finish() -> bytes` once.

pcm (s16le), wav (one header for the whole stream, sizes set to 0xFFFFFFFF: length unknown),
mp3 (lameenc), ogg (Vorbis) and opus (Ogg Opus) through libsndfile (soundfile), whose Ogg writers
only append, flac and aac (ADTS) through PyAV on a non-seekable sink (nothing is rewritten at the
end). Input is mono float32 in [-1, 1] or int16 at the encoder's rate. Opus only codes 8, 12, 16,
24 and 48 kHz: other rates are resampled inside to the next supported one (11025 -> 12000,
22050 -> 24000, 32000/44100 -> 48000); `rate` reports what the stream carries.
A streamed flac says "total samples unknown" in its header (libsndfile then reads it block by
block, not in one `sf.read`); `encode_all` writes whole files with exact sizes for responses that
are not streamed (wav and flac; the other formats are the same either way).
"""

from __future__ import annotations

import abc
import io
import struct
from typing import ClassVar

import numpy as np
import soxr

FORMATS = ("pcm", "wav", "mp3", "flac", "ogg", "opus", "aac")
MIME = {
    "pcm": "audio/L16", "wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac",
    "ogg": "audio/ogg", "opus": "audio/ogg; codecs=opus", "aac": "audio/aac",
}  # fmt: skip
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def to_s16(pcm: np.ndarray) -> np.ndarray:
    x = np.asarray(pcm).reshape(-1)
    if x.dtype == np.int16:
        return x
    return (np.clip(x.astype(np.float32), -1.0, 1.0) * 32767.0).astype(np.int16)


def to_f32(pcm: np.ndarray) -> np.ndarray:
    x = np.asarray(pcm).reshape(-1)
    if x.dtype == np.int16:
        return x.astype(np.float32) / 32768.0
    return x.astype(np.float32)


class Encoder(abc.ABC):
    format: ClassVar[str]

    def __init__(self, rate: int) -> None:
        self.rate = rate

    @property
    def mime(self) -> str:
        return MIME[self.format]

    @abc.abstractmethod
    def feed(self, pcm: np.ndarray) -> bytes: ...

    @abc.abstractmethod
    def finish(self) -> bytes: ...


class PcmEncoder(Encoder):
    format = "pcm"

    def feed(self, pcm: np.ndarray) -> bytes:
        return to_s16(pcm).astype("<i2").tobytes()

    def finish(self) -> bytes:
        return b""


def wav_header(rate: int, data_bytes: int = 0xFFFFFFFF) -> bytes:
    """RIFF/WAVE header for 16-bit mono; the default sizes say "unknown length" (streaming)."""
    riff = 0xFFFFFFFF if data_bytes == 0xFFFFFFFF else 36 + data_bytes
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + (b"data" + struct.pack("<I", data_bytes))
    )


class WavEncoder(PcmEncoder):
    format = "wav"

    def __init__(self, rate: int) -> None:
        super().__init__(rate)
        self._header_sent = False

    def _header(self) -> bytes:
        if self._header_sent:
            return b""
        self._header_sent = True
        return wav_header(self.rate)

    def feed(self, pcm: np.ndarray) -> bytes:
        return self._header() + super().feed(pcm)

    def finish(self) -> bytes:
        return self._header()


class Mp3Encoder(Encoder):
    format = "mp3"

    def __init__(self, rate: int, bitrate: int = 0) -> None:
        import lameenc

        super().__init__(rate)
        self._enc = lameenc.Encoder()
        self._enc.set_in_sample_rate(rate)
        self._enc.set_channels(1)
        self._enc.set_bit_rate(bitrate or (32 if rate <= 16000 else 64))
        self._enc.set_quality(5)

    def feed(self, pcm: np.ndarray) -> bytes:
        return bytes(self._enc.encode(to_s16(pcm).tobytes()))

    def finish(self) -> bytes:
        return bytes(self._enc.flush())


class _Tap(io.RawIOBase):
    """A write-only sink whose new bytes are taken after each write."""

    def __init__(self, seekable: bool) -> None:
        self._buf = bytearray()
        self._seekable = seekable
        self._pos = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:  # libsndfile asks; Ogg never rewinds
        base = {0: 0, 1: self._pos, 2: self._pos}[whence]
        if base + offset != self._pos:
            raise OSError("stream sink cannot seek")
        return self._pos

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._buf += data
        self._pos += len(data)
        return len(data)

    def take(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out


class SoundfileOggEncoder(Encoder):
    format = "ogg"
    subtype = "VORBIS"

    def __init__(self, rate: int) -> None:
        import soundfile as sf

        super().__init__(rate)
        self._tap = _Tap(seekable=True)
        self._file = sf.SoundFile(
            self._tap, "w", samplerate=rate, channels=1, format="OGG", subtype=self.subtype
        )

    def feed(self, pcm: np.ndarray) -> bytes:
        x = to_f32(pcm)
        if len(x):
            self._file.write(x)
        return self._tap.take()

    def finish(self) -> bytes:
        self._file.close()
        return self._tap.take()


class OpusEncoder(SoundfileOggEncoder):
    format = "opus"
    subtype = "OPUS"

    def __init__(self, rate: int) -> None:
        self.in_rate = rate
        coded = next(r for r in OPUS_RATES if r >= rate) if rate <= 48000 else 48000
        self._resampler = (
            soxr.ResampleStream(rate, coded, 1, dtype="float32") if coded != rate else None
        )
        super().__init__(coded)

    def feed(self, pcm: np.ndarray) -> bytes:
        x = to_f32(pcm)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x, last=False)
        return super().feed(x)

    def finish(self) -> bytes:
        tail = b""
        if self._resampler is not None:
            tail = super().feed(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        return tail + super().finish()


class AvEncoder(Encoder):
    """PyAV (FFmpeg) codecs into a non-seekable sink: flac, aac (ADTS)."""

    CODECS: ClassVar[dict[str, tuple[str, str]]] = {
        "flac": ("flac", "flac"),
        "aac": ("adts", "aac"),
    }

    def __init__(self, rate: int, fmt: str) -> None:
        import av

        super().__init__(rate)
        self.format = fmt  # type: ignore[misc]
        container, codec = self.CODECS[fmt]
        self._av = av
        self._tap = _Tap(seekable=False)
        self._out = av.open(self._tap, "w", format=container)
        self._stream = self._out.add_stream(codec, rate=rate)
        self._stream.layout = "mono"
        sample_fmt = self._stream.codec_context.codec.audio_formats[0].name
        self._resampler = av.AudioResampler(format=sample_fmt, layout="mono", rate=rate)

    def _encode(self, frame: object) -> None:
        for packet in self._stream.encode(frame):
            self._out.mux(packet)

    def feed(self, pcm: np.ndarray) -> bytes:
        x = to_f32(pcm)
        if len(x):
            frame = self._av.AudioFrame.from_ndarray(x.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = self.rate
            for f in self._resampler.resample(frame):
                self._encode(f)
        return self._tap.take()

    def finish(self) -> bytes:
        for f in self._resampler.resample(None):
            self._encode(f)
        self._encode(None)
        self._out.close()
        return self._tap.take()


def encode_all(fmt: str, rate: int, pcm: np.ndarray) -> bytes:
    """A whole file at once: wav and flac with exact sizes in their headers."""
    fmt = fmt.lower()
    if fmt in ("wav", "flac"):
        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, to_s16(pcm), rate, format=fmt.upper(), subtype="PCM_16")
        return buf.getvalue()
    enc = make_encoder(fmt, rate)
    return enc.feed(pcm) + enc.finish()


def make_encoder(fmt: str, rate: int) -> Encoder:
    """An encoder for `fmt` (one of FORMATS, case-insensitive) at `rate` Hz."""
    fmt = fmt.lower()
    if fmt == "pcm":
        return PcmEncoder(rate)
    if fmt == "wav":
        return WavEncoder(rate)
    if fmt == "mp3":
        return Mp3Encoder(rate)
    if fmt == "ogg":
        return SoundfileOggEncoder(rate)
    if fmt == "opus":
        return OpusEncoder(rate)
    if fmt in AvEncoder.CODECS:
        return AvEncoder(rate, fmt)
    raise ValueError(f"unsupported format {fmt!r}: one of {', '.join(FORMATS)}")
