"""Streaming encoders and post-processing: every format decodes at every rate with the right
duration; a streamed wav has one header; volume, pitch, rate and resampling do what they say."""

from __future__ import annotations

import io
import struct

import av
import numpy as np
import pytest
import soundfile as sf
import soxr

from engines.tts.encode import FORMATS, OPUS_RATES, encode_all, make_encoder, wav_header
from engines.tts.post import (
    OUTPUT_RATES,
    PostProcessor,
    apply_gain,
    nls_gain,
    nls_pitch,
    nls_speed,
    openai_speed,
    pitch_shift,
    time_stretch,
)

SECONDS = 1.5
LOSSY_SLACK = {"mp3": 2304, "aac": 2048}  # encoder delay + last-frame padding, in samples


def tone(rate: int, seconds: float = SECONDS, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = sum(amp / k * np.sin(2 * np.pi * freq * k * t) for k in (1, 2, 3))
    return np.asarray(x, np.float32)


def decode(data: bytes) -> tuple[int, np.ndarray]:
    """libsndfile where it can (block by block: a streamed flac has no length), else PyAV."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            blocks = list(f.blocks(blocksize=4096, dtype="float32"))
            return f.samplerate, np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    except sf.LibsndfileError:
        with av.open(io.BytesIO(data)) as c:
            stream = c.streams.audio[0]
            frames = [f.to_ndarray().reshape(-1) for f in c.decode(stream)]
            audio = np.concatenate(frames)
            scale = 32768.0 if audio.dtype == np.int16 else 1.0
            return stream.rate, audio.astype(np.float32) / np.float32(scale)


def encode_chunked(fmt: str, rate: int, pcm: np.ndarray, sizes: tuple[int, ...]) -> bytes:
    enc = make_encoder(fmt, rate)
    out, i, k = b"", 0, 0
    while i < len(pcm):
        n = sizes[k % len(sizes)]
        out += enc.feed(pcm[i : i + n])
        i, k = i + n, k + 1
    return out + enc.finish()


@pytest.mark.parametrize("rate", OUTPUT_RATES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_decodes_at_every_rate(fmt: str, rate: int) -> None:
    pcm = tone(rate)
    data = encode_chunked(fmt, rate, pcm, (997, 4096, 160))
    if fmt == "pcm":
        out = np.frombuffer(data, "<i2")
        assert len(out) == len(pcm)
        assert np.abs(out / 32768.0 - pcm).max() < 1e-3
        return
    got_rate, audio = decode(data)
    if fmt == "opus":  # coded at the next Opus rate
        assert got_rate == min(r for r in OPUS_RATES if r >= rate)
    else:
        assert got_rate == rate
    slack = LOSSY_SLACK.get(fmt, 0) / got_rate + (0.03 if fmt in ("opus", "ogg") else 0.001)
    assert abs(len(audio) / got_rate - SECONDS) <= slack, (fmt, rate, len(audio) / got_rate)
    rms = float(np.sqrt(np.mean(audio**2)))
    assert 0.1 < rms < 0.4, rms  # the tone, not silence or noise


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3"])
def test_whole_file_has_exact_length(fmt: str) -> None:
    pcm = tone(16000)
    audio, rate = sf.read(io.BytesIO(encode_all(fmt, 16000, pcm)), dtype="float32")
    assert rate == 16000
    assert abs(len(audio) - len(pcm)) <= LOSSY_SLACK.get(fmt, 0)


def test_int16_input_and_mime() -> None:
    pcm = (tone(16000) * 32767).astype(np.int16)
    for fmt in FORMATS:
        enc = make_encoder(fmt.upper(), 16000)
        assert enc.mime.startswith("audio/")
        data = enc.feed(pcm) + enc.finish()
        assert len(data) > 1000
    with pytest.raises(ValueError, match="unsupported format"):
        make_encoder("amr", 16000)


def test_streamed_wav_has_exactly_one_header() -> None:
    rate = 22050
    pcm = tone(rate)
    data = encode_chunked("wav", rate, pcm, (100, 2205))
    assert data.count(b"RIFF") == 1 and data.count(b"WAVEfmt ") == 1 and data.count(b"data") == 1
    header = wav_header(rate)
    assert data.startswith(header) and len(header) == 44
    assert struct.unpack("<I", data[4:8])[0] == 0xFFFFFFFF  # length unknown while streaming
    assert struct.unpack("<I", data[40:44])[0] == 0xFFFFFFFF
    body = np.frombuffer(data[44:], "<i2")
    assert len(body) == len(pcm)
    rate_read, audio = decode(data)
    assert rate_read == rate and len(audio) == len(pcm)
    empty = make_encoder("wav", 8000)
    assert empty.finish() == wav_header(8000)  # a header even for no audio, once
    assert empty.finish() == b""


def test_nls_rate_curves() -> None:
    assert nls_speed(0) == 1.0
    assert nls_speed(-500) == pytest.approx(0.5) and nls_speed(500) == pytest.approx(2.0)
    assert nls_speed(250) == pytest.approx(4 / 3) and nls_speed(-250) == pytest.approx(2 / 3)
    # NLS documents x -> (1 - 1/x) / 0.002 below 1 and / 0.001 above: we invert it
    for x in (0.6, 0.8, 1.25, 1.5, 1.9):
        rate = (1 - 1 / x) / (0.002 if x < 1 else 0.001)
        assert nls_speed(round(rate)) == pytest.approx(x, rel=0.01)
    values = [nls_speed(r) for r in range(-500, 501, 50)]
    assert values == sorted(values)
    assert nls_pitch(500) == pytest.approx(2.0)
    assert openai_speed(0.25) == 0.25 and openai_speed(4.0) == 4.0
    for bad in (lambda: nls_speed(501), lambda: nls_pitch(-600), lambda: nls_gain(101),
                lambda: openai_speed(4.5)):  # fmt: skip
        with pytest.raises(ValueError):
            bad()


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_volume_gain_and_soft_limit() -> None:
    x = tone(16000, amp=0.2)
    assert rms(PostProcessor(16000, 16000, volume=25).process(x)) == pytest.approx(rms(x) / 2, 1e-3)
    assert np.all(PostProcessor(16000, 16000, volume=0).process(x) == 0)
    assert np.array_equal(PostProcessor(16000, 16000, volume=50).process(x), x)
    loud = tone(16000, amp=0.6)  # peaks ~0.9: doubled it would clip
    y = apply_gain(loud, 2.0)
    assert np.abs(y).max() < 1.0 and rms(y) > 1.5 * rms(loud)
    quiet = y[np.abs(loud) < 0.4]
    assert np.allclose(quiet, 2 * loud[np.abs(loud) < 0.4], atol=1e-6)  # linear below the knee


def dominant_freq(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


@pytest.mark.parametrize("pitch_rate", [-300, 200, 500])
def test_pitch_shift_keeps_duration(pitch_rate: int) -> None:
    rate = 24000
    x = tone(rate, seconds=2.0, freq=200.0)
    y = PostProcessor(rate, rate, pitch_rate=pitch_rate).process(x)
    assert len(y) == len(x)
    factor = nls_pitch(pitch_rate)
    assert dominant_freq(y[rate // 4 : -rate // 4], rate) == pytest.approx(200 * factor, rel=0.04)


def test_time_stretch_lengths() -> None:
    x = tone(16000, seconds=1.0)
    for factor in (0.5, 0.8, 1.5, 2.0):
        y = time_stretch(x, factor, 16000)
        assert len(y) == round(len(x) * factor)
        assert dominant_freq(y, 16000) == pytest.approx(220, rel=0.03)
    assert np.array_equal(pitch_shift(x, 1.0, 16000), x)


@pytest.mark.parametrize("out_rate", OUTPUT_RATES)
def test_streaming_resample_matches_whole_without_clicks(out_rate: int) -> None:
    rate = 24000
    x = tone(rate, seconds=1.0, freq=300.0)
    post = PostProcessor(rate, out_rate)
    rng = np.random.default_rng(7)
    pieces, i = [], 0
    while i < len(x):
        n = int(rng.integers(50, 3000))
        pieces.append(post.process(x[i : i + n]))
        i += n
    y = np.concatenate([*pieces, post.flush()])
    assert abs(len(y) - len(x) * out_rate / rate) <= 2
    whole = soxr.resample(x, rate, out_rate, quality="HQ")
    n = min(len(y), len(whole))
    assert np.abs(y[:n] - whole[:n]).max() < 1e-3  # chunking changes nothing audible
    core = y[out_rate // 20 : -out_rate // 20]  # skip the filter's edges
    jumps = np.abs(np.diff(core)).max()
    assert jumps < 2.5 * 0.55 * 2 * np.pi * 900 / out_rate + 1e-3  # smooth: no click
