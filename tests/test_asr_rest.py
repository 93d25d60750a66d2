"""POST /stream/v1/asr against a real bridge, a real nats-server and a real light engine."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import lameenc
import numpy as np
import pytest
import soundfile as sf
import soxr
from aiohttp import web

from tests.conftest import DATA, BridgeProcess, EngineProcess, wait_engines
from tests.textmetrics import wer

CLIPS = {c["file"]: c for c in json.loads((DATA / "clips.json").read_text())}
FOX = "en_fox.wav"
TWO = "en_two_sentences.wav"
MAX_WER = 0.25
TOKEN, APPKEY = "test-token-0123456789", "test-appkey"


def clip_pcm(name: str) -> tuple[np.ndarray, int]:
    pcm, rate = sf.read(DATA / name, dtype="int16")
    return pcm, rate


def encode(name: str, kind: str) -> bytes:
    """The clip re-encoded: mp3 (lameenc), ogg vorbis / flac (libsndfile), a 44.1 kHz stereo
    wav, raw 16 kHz pcm or raw 8 kHz pcm."""
    pcm, rate = clip_pcm(name)
    buf = io.BytesIO()
    if kind == "mp3":
        enc = lameenc.Encoder()
        enc.set_bit_rate(64)
        enc.set_in_sample_rate(rate)
        enc.set_channels(1)
        return bytes(enc.encode(pcm.tobytes()) + enc.flush())
    if kind in ("ogg", "flac"):
        sf.write(buf, pcm, rate, format=kind.upper(), subtype="VORBIS" if kind == "ogg" else None)
        return buf.getvalue()
    if kind == "wav44k_stereo":
        x = soxr.resample(pcm.astype(np.float32) / 32768, rate, 44100)
        sf.write(buf, np.stack([x, x * 0.5], axis=1), 44100, format="WAV", subtype="PCM_16")
        return buf.getvalue()
    if kind == "pcm8k":
        x = soxr.resample(pcm.astype(np.float32) / 32768, rate, 8000)
        return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
    assert kind == "pcm"
    return pcm.astype("<i2").tobytes()


async def post(
    url: str, body: bytes, params: dict[str, str] | None = None, token: str | None = None
) -> tuple[int, dict, aiohttp.typedefs.LooseHeaders]:
    headers = {"Content-Type": "application/octet-stream"}
    if token is not None:
        headers["X-NLS-Token"] = token
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/stream/v1/asr", data=body, params=params or {}, headers=headers) as r,
    ):
        return r.status, await r.json(), r.headers


def assert_ok(status: int, body: dict, headers, clip: str = FOX) -> None:  # type: ignore[no-untyped-def]
    assert status == 200, body
    assert body["status"] == 20000000 and body["message"] == "SUCCESS"
    assert len(body["task_id"]) == 32 and headers["task_id"] == body["task_id"]
    assert wer(CLIPS[clip]["text"], body["result"]) <= MAX_WER, body["result"]


def assert_error(status: int, body: dict, http: int, code: int, text: str = "") -> None:
    assert status == http, body
    assert body["status"] == code, body
    assert body["result"] == "" and len(body["task_id"]) == 32
    assert text.lower() in body["message"].lower(), body["message"]


# ---- good requests
async def test_wav_body_with_default_format(bridge: BridgeProcess) -> None:
    """The NLS default format=pcm with a WAV body: the header is sniffed, not read as audio."""
    status, body, headers = await post(bridge.url, (DATA / FOX).read_bytes())
    assert_ok(status, body, headers)
    sentences = body["sentences"]
    assert sentences and all(s["begin_time"] < s["end_time"] for s in sentences)
    assert sentences[-1]["end_time"] <= 4500


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("pcm", {"format": "pcm", "sample_rate": "16000"}),
        ("pcm8k", {"format": "pcm", "sample_rate": "8000"}),
        ("mp3", {"format": "mp3"}),
        ("ogg", {"format": "ogg"}),
        ("flac", {"format": "flac"}),
        ("wav44k_stereo", {"format": "wav", "sample_rate": "16000"}),
    ],
)
async def test_formats(bridge: BridgeProcess, kind: str, params: dict[str, str]) -> None:
    status, body, headers = await post(bridge.url, encode(FOX, kind), params)
    assert_ok(status, body, headers)


async def test_two_sentences_punctuation_and_words(bridge: BridgeProcess) -> None:
    params = {
        "enable_punctuation_prediction": "true",
        "enable_inverse_text_normalization": "true",
        "enable_words": "true",
        "disfluency": "false",
        "vocabulary_id": "ignored",
    }
    status, body, headers = await post(bridge.url, (DATA / TWO).read_bytes(), params)
    assert_ok(status, body, headers, TWO)
    assert "." in body["result"]
    times = [(s["begin_time"], s["end_time"]) for s in body["sentences"]]
    assert all(b < e for b, e in times) and times == sorted(times)
    words = [w for s in body["sentences"] for w in s["words"]]
    assert len(words) >= 10 and all(w["startTime"] <= w["endTime"] for w in words)


async def test_no_punctuation_by_default(bridge: BridgeProcess) -> None:
    status, body, _ = await post(bridge.url, (DATA / TWO).read_bytes())
    assert status == 200 and "." not in body["result"] and "," not in body["result"]


async def test_customization_id_selects_a_live_model(bridge: BridgeProcess) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{bridge.url}/stream/v1/asr/models") as r,
    ):
        models = (await r.json())["models"]
    status, body, headers = await post(
        bridge.url, (DATA / FOX).read_bytes(), {"customization_id": models[0]["id"]}
    )
    assert_ok(status, body, headers)


# ---- bad requests
async def test_bad_requests_then_service_still_answers(bridge: BridgeProcess) -> None:
    wav = (DATA / FOX).read_bytes()
    garbage = np.random.default_rng(7).bytes(20000)
    minute = np.zeros(61 * 8000, dtype="<i2").tobytes()
    cases = [
        (b"", {}, 400, 40000002, "empty"),
        (garbage, {"format": "mp3"}, 400, 40000002, "cannot decode"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", {}, 400, 40000002, "cannot decode"),
        (wav, {"sample_rate": "7000"}, 400, 41010101, "sample_rate"),
        (wav, {"sample_rate": "96000"}, 400, 41010101, "sample_rate"),
        (wav, {"sample_rate": "abc"}, 400, 40000003, "sample_rate"),
        (wav, {"format": "xyz"}, 400, 40000003, "format"),
        (wav, {"customization_id": "no-such-model"}, 400, 40000003, "available models"),
        (wav, {"enable_punctuation_prediction": "maybe"}, 400, 40000003, "boolean"),
        (minute, {"format": "pcm", "sample_rate": "8000"}, 400, 40000003, "61.0 s"),
        (b"", {"audio_address": "ftp://example.com/a.wav"}, 400, 40000003, "http"),
        (b"", {"audio_address": "http://127.0.0.1:9/a.wav"}, 400, 40000003, "refused"),
        (b"", {"audio_address": "http://localhost:9/a.wav"}, 400, 40000003, "refused"),
        (b"", {"audio_address": "http://[::1]:9/a.wav"}, 400, 40000003, "refused"),
        (b"", {"audio_address": "http://169.254.169.254/x"}, 400, 40000003, "refused"),
    ]
    for body, params, http, code, text in cases:
        status, answer, _ = await post(bridge.url, body, params)
        assert_error(status, answer, http, code, text)
    status, body, headers = await post(bridge.url, wav)
    assert_ok(status, body, headers)


# ---- auth, size cap and audio_address on a bridge with APPTOKEN / APPKEY
@pytest.fixture(scope="module")
def auth_bridge(
    nats_url: str, light_engine: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BridgeProcess]:
    proc = BridgeProcess(
        nats_url,
        tmp_path_factory.mktemp("logs"),
        APPTOKEN=TOKEN,
        APPKEY=APPKEY,
        MAX_AUDIO_SIZE="1000000",
        ASR_ALLOW_PRIVATE_AUDIO_ADDRESS="true",
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
async def audio_server() -> AsyncIterator[str]:
    """A local HTTP server with the clip, a redirect to it, a 404 and an oversized file."""
    routes = web.RouteTableDef()

    @routes.get("/fox.wav")
    async def fox(_: web.Request) -> web.Response:
        return web.Response(body=(DATA / FOX).read_bytes(), content_type="audio/wav")

    @routes.get("/moved")
    async def moved(_: web.Request) -> web.Response:
        raise web.HTTPFound("/fox.wav")

    @routes.get("/big.wav")
    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b"\0" * 1_200_000)

    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_auth(auth_bridge: BridgeProcess) -> None:
    wav = (DATA / FOX).read_bytes()
    key = {"appkey": APPKEY}
    for token, params, text in [
        (None, key, "token"),
        ("wrong-token-0123456789", key, "invalid"),
        (TOKEN, {}, "appkey"),
        (TOKEN, {"appkey": "wrong-key"}, "invalid"),
    ]:
        status, body, _ = await post(auth_bridge.url, wav, params, token)
        assert_error(status, body, 401, 40000001, text)
        assert TOKEN not in body["message"]
    status, body, headers = await post(auth_bridge.url, wav, key, TOKEN)
    assert_ok(status, body, headers)


async def test_size_cap_and_audio_address(auth_bridge: BridgeProcess, audio_server: str) -> None:
    key = {"appkey": APPKEY}
    status, body, _ = await post(auth_bridge.url, b"\0" * 1_200_000, key, TOKEN)
    assert_error(status, body, 413, 40000002, "limit")
    for path in ("/fox.wav", "/moved"):
        params = {**key, "audio_address": audio_server + path}
        status, body, headers = await post(auth_bridge.url, b"", params, TOKEN)
        assert_ok(status, body, headers)
    params = {**key, "audio_address": audio_server + "/missing.wav"}
    status, body, _ = await post(auth_bridge.url, b"", params, TOKEN)
    assert_error(status, body, 400, 40000003, "HTTP 404")
    params = {**key, "audio_address": audio_server + "/big.wav"}
    status, body, _ = await post(auth_bridge.url, b"", params, TOKEN)
    assert_error(status, body, 413, 40000002, "limit")


async def test_no_engine_is_503(own_nats: str, tmp_path: Path) -> None:
    """A bridge on a bus without engines answers 503 with the NLS envelope."""
    proc = BridgeProcess(own_nats, tmp_path, ASR_OPEN_TIMEOUT="0.5").start()
    try:
        status, body, _ = await post(proc.url, (DATA / FOX).read_bytes())
        assert_error(status, body, 503, 50000000, "no asr engine")
    finally:
        proc.stop()


async def until_engine_busy(url: str, timeout: float = 10.0) -> None:
    """Wait until the (only) engine reports a session in its heartbeat."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(timeout):
        while True:
            async with http.get(f"{url}/stream/v1/asr/health") as r:
                if any(e["active"] for e in (await r.json())["engines"]):
                    return
            await asyncio.sleep(0.05)


async def test_busy_engine_is_429(own_nats: str, tmp_path: Path) -> None:
    """One engine with room for one session: a second request while the first decodes gets
    40000005 with HTTP 429 (NLS envelope here, OpenAI error shape on /v1)."""
    engine = EngineProcess(own_nats, tmp_path, ASR_BACKEND="light", ASR_MAX_SESSIONS="1")
    engine.start()
    proc = None
    try:
        await asyncio.to_thread(wait_engines, own_nats, 1)
        proc = BridgeProcess(own_nats, tmp_path, ASR_OPEN_TIMEOUT="0.3").start()
        wav = (DATA / TWO).read_bytes()
        long_pcm = encode(TWO, "pcm") * 2  # 14 s: the engine is busy with it for a while
        first = asyncio.create_task(post(proc.url, long_pcm))
        await until_engine_busy(proc.url)
        status, body, _ = await post(proc.url, wav)
        assert_error(status, body, 429, 40000005, "too many requests")
        form = aiohttp.FormData()
        form.add_field("file", wav, filename="two.wav")
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{proc.url}/v1/audio/transcriptions", data=form) as r,
        ):
            assert r.status == 429
            assert (await r.json())["error"]["code"] == "rate_limit_exceeded"
        status, body, _ = await first
        assert status == 200 and wer(CLIPS[TWO]["text"] * 2, body["result"]) <= MAX_WER
    finally:
        if proc is not None:
            proc.stop()
        engine.stop()
