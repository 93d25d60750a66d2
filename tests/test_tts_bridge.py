"""Speech synthesis through the bridge with real clients: aiohttp on the NLS REST API, the
official NLS SDK's NlsSpeechSynthesizer (plain and long_tts), raw FlowingSpeechSynthesizer
frames token by token, and the openai client; a real bridge, nats-server and light TTS engine
(Kokoro + Piper), and the light ASR engine where a prompt is transcribed."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import openai
import pytest

from bus.client import Bus
from tests.conftest import DATA, BridgeProcess, EngineProcess
from tests.harness import nls_frame
from tests.textmetrics import wer
from tests.tts_client import (
    FOX,
    FlowRun,
    check_subtitles,
    container_rate,
    create_voice,
    decode,
    envelope,
    fits_text,
    flowing,
    get_json,
    request,
    sdk_synthesize,
)

EN = "The quick brown fox jumps over the lazy dog. It was a sunny day by the river."
ZH = "今天天气很好。我们去公园散步吧。"
TOKEN, APPKEY = "tts-test-token-0123456789", "tts-test-appkey"


@pytest.fixture(scope="module")
def tts_bridge(bridge: BridgeProcess, tts_engine: EngineProcess) -> BridgeProcess:
    """The session's bridge (auth off) with the light ASR and TTS engines behind it."""
    return bridge


@pytest.fixture(scope="module")
def voices_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("voices")
    (folder / "fox-dir.wav").write_bytes((DATA / "en_fox.wav").read_bytes())
    (folder / "fox-dir.txt").write_text(FOX + "\n")
    (folder / "no-text.wav").write_bytes((DATA / "en_fox.wav").read_bytes())
    return folder


@pytest.fixture(scope="module")
def strict_bridge(
    nats_url: str,
    tts_engine: EngineProcess,
    voices_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BridgeProcess]:
    """A bridge with APPTOKEN and APPKEY, NLS's audio/mpeg Content-Type, a 2 s idle timeout
    and a voices/ folder."""
    proc = BridgeProcess(
        nats_url,
        tmp_path_factory.mktemp("logs"),
        APPTOKEN=TOKEN,
        APPKEY=APPKEY,
        TTS_REST_MPEG_CONTENT_TYPE="true",
        ASR_IDLE_TIMEOUT="2",
        VOICES_DIR=str(voices_dir),
    ).start()
    yield proc
    proc.stop()


# ---------------------------------------------------------------- REST


@pytest.mark.parametrize(
    ("method", "fmt", "rate", "mime"),
    [
        ("GET", None, None, "audio/L16;rate=16000;channels=1"),  # the NLS defaults
        ("POST", "wav", 22050, "audio/wav"),
        ("GET", "mp3", 24000, "audio/mpeg"),
        ("POST", "flac", 8000, "audio/flac"),
        ("POST", "ogg", 44100, "audio/ogg"),
        ("GET", "opus", 48000, "audio/ogg; codecs=opus"),
        ("POST", "aac", 32000, "audio/aac"),
        ("POST", "PCM", 11025, "audio/L16;rate=11025;channels=1"),
    ],
)
async def test_rest_formats_and_rates(
    tts_bridge: BridgeProcess, method: str, fmt: str | None, rate: int | None, mime: str
) -> None:
    text = "Hello there, how are you today?"
    params: dict[str, Any] = {"text": text, "voice": "英文男", "appkey": "any"}
    if fmt:
        params |= {"format": fmt, "sample_rate": rate}
    kw = {"params": params} if method == "GET" else {"json": params}
    status, headers, body, _ = await request(method, f"{tts_bridge.url}/stream/v1/tts", **kw)
    assert status == 200, body[:300]
    assert headers["Content-Type"] == mime and headers["Transfer-Encoding"] == "chunked"
    assert re.fullmatch(r"[0-9a-f]{32}", headers["task_id"])
    fmt, rate = (fmt or "pcm").lower(), rate or 16000
    audio = decode(body, fmt, rate)
    if fmt not in ("pcm", "opus"):
        assert audio.rate == rate
    if fmt in ("wav", "opus"):
        assert container_rate(body, fmt) == rate
    if fmt == "wav":
        assert body.count(b"RIFF") == 1
    assert fits_text(audio.seconds, text), audio
    assert audio.peak > 0.05


async def test_rest_streams_audio_as_it_is_made(tts_bridge: BridgeProcess) -> None:
    text = " ".join([EN, "And here is a third sentence to read.", "The fourth one ends it."])
    status, _, body, times = await request(
        "POST", f"{tts_bridge.url}/stream/v1/tts", json={"text": text, "voice": "英文女"}
    )
    assert status == 200
    assert len(times) > 2 and times[0] < 0.5 * times[-1], times
    assert fits_text(decode(body, "pcm").seconds, text)


async def test_rest_client_leaving_stops_the_synthesis(
    tts_engine: EngineProcess, nats_url: str, tmp_path: Path
) -> None:
    """A REST client that hangs up mid-stream: the engine stops synthesizing (its slot is free
    within seconds, not after the minutes 300 sentences take)."""
    bridge = BridgeProcess(nats_url, tmp_path, TTS_MAX_TEXT_LENGTH="20000").start()
    bus = await Bus.connect(nats_url)
    try:
        await bus.directory.wait_for(1, 60, task="tts", where=lambda e: e.active == 0)
        body = {"text": " ".join([EN] * 150), "voice": "英文女", "format": "pcm"}
        url = f"{bridge.url}/stream/v1/tts"
        async with aiohttp.ClientSession() as http, http.post(url, json=body) as r:
            assert r.status == 200
            assert await r.content.readany()
            await bus.directory.wait_for(1, 10, task="tts", where=lambda e: e.active == 1)
            r.close()  # drops the connection
        left = time.monotonic()
        await bus.directory.wait_for(1, 10, task="tts", where=lambda e: e.active == 0)
        assert time.monotonic() - left < 5
    finally:
        await bus.close()
        bridge.stop()


async def test_rest_mandarin_and_volume(tts_bridge: BridgeProcess) -> None:
    url = f"{tts_bridge.url}/stream/v1/tts"
    loud = await request("POST", url, json={"text": ZH, "voice": "中文女", "volume": 100})
    soft = await request("POST", url, json={"text": ZH, "voice": "中文女", "volume": 10})
    a, b = decode(loud[2], "pcm"), decode(soft[2], "pcm")
    assert fits_text(a.seconds, ZH) and fits_text(b.seconds, ZH)
    assert b.peak < 0.5 * a.peak


@pytest.mark.parametrize(
    ("method", "params", "code", "says"),
    [
        ("GET", {"text": ""}, 40000003, "text is required"),
        ("POST", {"text": "   "}, 40000003, "must not be blank"),
        ("POST", {"text": "Hi.", "volume": "60"}, 40000003, "valid integer"),
        ("POST", {"text": "Hi.", "format": None}, 40000003, "Invalid format None"),
        ("POST", {}, 40000003, "text is required"),
        ("GET", {"text": "a" * 301}, 40000003, "301 characters"),
        ("POST", {"text": "a" * 1001}, 40000003, "1001 characters"),
        ("POST", {"text": "Hi.", "voice": "nobody"}, 40000003, "/stream/v1/tts/voices"),
        ("POST", {"text": "Hi.", "format": "wma"}, 40000003, "Invalid format"),
        ("GET", {"text": "Hi.", "sample_rate": "12345"}, 41010101, "Invalid sample_rate"),
        ("POST", {"text": "Hi.", "sample_rate": "fast"}, 40000003, "Invalid sample_rate"),
        ("POST", {"text": "Hi.", "volume": 101}, 40000003, "Invalid volume"),
        ("GET", {"text": "Hi.", "speech_rate": "-501"}, 40000003, "Invalid speech_rate"),
        ("POST", {"text": "Hi.", "pitch_rate": 600}, 40000003, "Invalid pitch_rate"),
    ],
)
async def test_rest_bad_input(
    tts_bridge: BridgeProcess, method: str, params: dict[str, Any], code: int, says: str
) -> None:
    kw = {"params": params} if method == "GET" else {"json": params}
    status, headers, body, _ = await request(method, f"{tts_bridge.url}/stream/v1/tts", **kw)
    data = envelope(status, headers, body)
    assert status == 400 and data["status"] == code and says in data["message"], data


async def test_rest_bad_body_then_serves(tts_bridge: BridgeProcess) -> None:
    url = f"{tts_bridge.url}/stream/v1/tts"
    for body in (b"not json", b"[1, 2]"):
        status, headers, answer, _ = await request("POST", url, data=body)
        data = envelope(status, headers, answer)
        assert status == 400 and data["status"] == 40000002 and "JSON object" in data["message"]
    status, _, audio, _ = await request("POST", url, json={"text": "Still here."})
    assert status == 200 and decode(audio, "pcm").seconds > 0.3


async def test_auth_and_nls_content_type(strict_bridge: BridgeProcess) -> None:
    url = f"{strict_bridge.url}/stream/v1/tts"
    query = {"text": "Hello.", "format": "wav", "appkey": APPKEY}
    status, headers, body, _ = await request("GET", url, params=query)
    assert status == 401 and envelope(status, headers, body)["status"] == 40000001
    status, headers, body, _ = await request("GET", url, params={**query, "token": TOKEN})
    assert status == 200 and headers["Content-Type"] == "audio/mpeg"  # as NLS, for any format
    assert body[:4] == b"RIFF"
    wrong = {"text": "Hello.", "appkey": "wrong-appkey"}
    status, headers, body, _ = await request(
        "POST", url, json=wrong, headers={"X-NLS-Token": TOKEN}
    )
    assert status == 401 and "appkey" in envelope(status, headers, body)["message"]
    status, headers, body, _ = await request(
        "POST", url, json={"text": "Hello.", "appkey": APPKEY, "token": TOKEN}
    )
    assert status == 200 and len(body) > 1000
    status, _, body, _ = await request("GET", f"{strict_bridge.url}/stream/v1/tts/voices")
    assert status == 401
    speech = f"{strict_bridge.url}/v1/audio/speech"
    body_json = {"model": "tts-1", "input": "Hello.", "voice": "alloy"}
    status, _, body, _ = await request("POST", speech, json=body_json)
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, headers, body, _ = await request("POST", speech, json=body_json, headers=auth)
    assert status == 200 and headers["Content-Type"] == "audio/mpeg" and len(body) > 1000


# ---------------------------------------------------------------- NLS SDK: SpeechSynthesizer


@pytest.mark.parametrize(
    ("long_tts", "fmt", "rate", "voice", "text"),
    [
        (False, "pcm", 16000, "xiaoyun", ZH),
        (False, "wav", 24000, "英文男", EN),
        (True, "mp3", 22050, "英文女", " ".join([EN] * 3)),
    ],
)
def test_sdk_synthesizer(
    tts_bridge: BridgeProcess, long_tts: bool, fmt: str, rate: int, voice: str, text: str
) -> None:
    run = sdk_synthesize(
        f"{tts_bridge.ws_url}/ws/v1",
        text,
        long_tts=long_tts,
        voice=voice,
        aformat=fmt,
        sample_rate=rate,
        ex={"enable_subtitle": True},
    )
    assert run.failure() is None, run.failure()
    names = run.names()
    assert names[-1] == "SynthesisCompleted" and set(names[:-1]) == {"MetaInfo"}, names
    namespace = "SpeechLongSynthesizer" if long_tts else "SpeechSynthesizer"
    assert {h["namespace"] for _, _, h in run.events} == {namespace}
    assert len({h["task_id"] for _, _, h in run.events}) == 1
    data = bytes(run.audio)
    audio = decode(data, fmt, rate)
    if fmt != "pcm":
        assert audio.rate == rate
    if fmt == "wav":
        assert data.count(b"RIFF") == 1, "one header for the whole stream"
    assert fits_text(audio.seconds, text) and audio.peak > 0.05
    subtitles = run.subtitles()
    check_subtitles(subtitles, audio.seconds * 1000, text)
    sentences = [s for s in subtitles if s["sentence"]]
    assert len(sentences) >= 2 and any(not s["sentence"] for s in subtitles)
    assert run.frames > 1  # streamed, not one blob


def test_sdk_synthesizer_unknown_voice(tts_bridge: BridgeProcess) -> None:
    run = sdk_synthesize(f"{tts_bridge.ws_url}/ws/v1", "Hi.", voice="nobody-at-all")
    failed = run.failure()
    assert failed and failed["status"] == 40000003 and "voices" in failed["status_text"]
    assert not run.audio


# ---------------------------------------------------------------- FlowingSpeechSynthesizer


@pytest.mark.parametrize(
    ("pieces", "voice", "sentences"),
    [
        (
            [w + " " for w in EN.split()],
            "英文男",
            ["The quick brown fox jumps over the lazy dog.", "It was a sunny day by the river."],
        ),
        (list(ZH), "xiaoyun", ["今天天气很好。", "我们去公园散步吧。"]),
    ],
)
async def test_flowing_token_by_token(
    tts_bridge: BridgeProcess, pieces: list[str], voice: str, sentences: list[str]
) -> None:
    start = {"voice": voice, "format": "PCM", "sample_rate": 24000, "volumn": 60,
             "enable_subtitle": True}  # fmt: skip
    run = await flowing(f"{tts_bridge.ws_url}/ws/v1/tts", pieces, start)
    assert run.failure() is None, run.failure()
    order = [n for i, n in enumerate(run.order) if n != "audio" or run.order[i - 1] != "audio"]
    per_sentence = ["SentenceBegin", "audio", "SentenceSynthesis", "SentenceEnd"]
    if order[-2] == "audio":  # the encoder's last bytes
        order.pop(-2)
    assert order == ["SynthesisStarted", *per_sentence * len(sentences), "SynthesisCompleted"]
    duration_ms = decode(bytes(run.audio), "pcm", 24000).seconds * 1000
    ends = run.payloads("SentenceEnd")
    assert [e["subtitles"][0]["text"] for e in ends] == sentences
    assert [b["index"] for b in run.payloads("SentenceBegin")] == [1, 2]
    for end, sentence in zip(ends, sentences, strict=True):
        check_subtitles(end["subtitles"], duration_ms, sentence)
    assert any(not s["sentence"] for e in ends for s in e["subtitles"])  # word times
    assert ends[-1]["subtitles"][0]["end_time"] > 0.9 * duration_ms - 300
    assert fits_text(duration_ms / 1000, "".join(pieces))


async def flow_failure(url: str, frames: list[str | bytes], **kw: Any) -> dict[str, Any]:
    """Send raw frames; the TaskFailed header the server answers with before it closes."""
    run = FlowRun()
    async with aiohttp.ClientSession() as http, http.ws_connect(url, **kw) as ws:
        for frame in frames:
            await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
        async with asyncio.timeout(30):
            async for msg in ws:
                run.add(msg)
    assert run.names()[-1] == "TaskFailed", run.names()
    return run.events[-1][2]


async def test_flowing_bad_frames(tts_bridge: BridgeProcess) -> None:
    url = f"{tts_bridge.ws_url}/ws/v1"
    run = FlowRun()
    start = run.frame("StartSynthesis", {"voice": "xiaoyun"})
    wrong_task = nls_frame("StopSynthesis", "0" * 32, namespace="FlowingSpeechSynthesizer")
    cases: list[tuple[list[str | bytes], int, str]] = [
        ([run.frame("RunSynthesis", {"text": "hi"})], 40000002, "before StartSynthesis"),
        ([start, "{not json"], 40000002, "Not Json"),
        ([start, b"\x00\x01"], 40000002, "Binary frames"),
        ([start, run.frame("RunSynthesis", {})], 40000003, "text is required"),
        ([start, wrong_task], 40000002, "Task ID not match"),
        ([start, run.frame("StartSynthesis", {})], 40000002, "already started"),
        ([run.frame("StartSynthesis", {"voice": "nobody-at-all"})], 40000003, "Unknown voice"),
        ([run.frame("StartSynthesis", {"sample_rate": 12345})], 41010101, "sample_rate"),
        ([run.frame("StartSynthesis", {"volumn": 101})], 40000003, "Invalid volumn 101"),
        ([run.frame("Synthesize", {})], 40000002, "Invalid message name"),
    ]
    for frames, code, says in cases:
        header = await flow_failure(url, frames)
        assert header["status"] == code and says in header["status_text"], (says, header)
        assert header["namespace"] == "FlowingSpeechSynthesizer"
    ok = await flowing(url, ["Still ", "here."], {"voice": "英文女"})
    assert ok.failure() is None and ok.names()[-1] == "SynthesisCompleted"


async def test_idle_auth_and_token_query(strict_bridge: BridgeProcess) -> None:
    url = f"{strict_bridge.ws_url}/ws/v1"
    run = FlowRun()
    start = run.frame("StartSynthesis", {"voice": "xiaoyun"})
    refused = await flow_failure(url, [start])  # no token
    assert refused["status"] == 40000001 and refused["task_id"] == run.task_id
    wrong_key = nls_frame("StartSynthesis", run.task_id, {}, namespace="SpeechSynthesizer",
                          appkey="wrong-key")  # fmt: skip
    refused = await flow_failure(f"{url}?token={TOKEN}", [wrong_key])
    assert refused["status"] == 40000001 and "appkey" in refused["status_text"]
    # idle: no text for ASR_IDLE_TIMEOUT (2 s); pings don't count
    good = nls_frame("StartSynthesis", run.task_id, {"voice": "xiaoyun"},
                     namespace="FlowingSpeechSynthesizer", appkey=APPKEY)  # fmt: skip
    began = time.monotonic()
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{url}/tts?token={TOKEN}", autoping=True) as ws,
    ):
        await ws.send_str(good)
        events: list[dict[str, Any]] = []

        async def ping() -> None:
            while True:
                await ws.ping()
                await asyncio.sleep(0.3)

        pinger = asyncio.create_task(ping())
        try:
            async with asyncio.timeout(15):
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        events.append(json.loads(msg.data)["header"])
        finally:
            pinger.cancel()
    assert [e["name"] for e in events] == ["SynthesisStarted", "TaskFailed"]
    assert events[-1]["status"] == 40000004 and 1.8 < time.monotonic() - began < 6


# ---------------------------------------------------------------- OpenAI


@pytest.fixture
def client(tts_bridge: BridgeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{tts_bridge.url}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_openai_speech_formats(client: openai.OpenAI, fmt: str) -> None:
    text = "Hello from the OpenAI client."
    response = client.audio.speech.create(
        model="tts-1",
        voice="alloy",
        input=text,
        response_format=fmt,  # type: ignore[arg-type]
    )
    audio = decode(response.content, fmt, 24000)
    if fmt not in ("pcm", "opus"):
        assert audio.rate == 24000
    assert fits_text(audio.seconds, text) and audio.peak > 0.05


def test_openai_streaming_and_sse(client: openai.OpenAI) -> None:
    text = " ".join([EN, "A third sentence keeps the stream going for a while."])
    began = time.monotonic()
    arrivals: list[float] = []
    data = bytearray()
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice={"id": "echo"}, input=text, response_format="pcm",  # type: ignore[arg-type]
        speed=1.5, instructions="Cheerful",
    ) as response:  # fmt: skip
        assert response.headers["content-type"].startswith("audio/L16;rate=24000")
        for chunk in response.iter_bytes():
            arrivals.append(time.monotonic() - began)
            data += chunk
    assert len(arrivals) > 2 and arrivals[0] < 0.5 * arrivals[-1], arrivals
    fast = decode(bytes(data), "pcm", 24000).seconds
    assert fits_text(fast * 1.5, text)

    deltas, done = bytearray(), None
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="nova", input=text, response_format="mp3", stream_format="sse"
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if event["type"] == "speech.audio.delta":
                    deltas += base64.b64decode(event["audio"])
                else:
                    done = event
    assert done and done["type"] == "speech.audio.done"
    assert done["usage"]["input_tokens"] == len(text) and done["usage"]["output_tokens"] > 0
    assert fits_text(decode(bytes(deltas), "mp3").seconds, text)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "", "voice": "alloy"}, "input"),
        ({"input": "a" * 4097, "voice": "alloy"}, "input"),
        ({"input": "Hi.", "voice": "nobody-at-all"}, None),
        ({"input": "Hi.", "voice": "alloy", "speed": 5}, "speed"),
        ({"input": "Hi.", "voice": "alloy", "response_format": "wma"}, "response_format"),
        ({"input": "Hi.", "voice": {"name": "alloy"}}, "voice"),
    ],
)
def test_openai_errors(client: openai.OpenAI, body: dict[str, Any], param: str | None) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.speech.create(model="tts-1", **body)
    error = err.value.body
    assert isinstance(error, dict) and error["type"] == "invalid_request_error", error
    assert error["param"] == param and error["message"], error


# ---------------------------------------------------------------- voices


def wav_of(seconds: float, rate: int = 16000) -> bytes:
    """The fox clip looped (or cut) to `seconds`."""
    with wave.open(str(DATA / "en_fox.wav")) as w:
        clip = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        rate = w.getframerate()
    n = int(seconds * rate)
    audio = np.resize(clip, n)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(audio.astype("<i2").tobytes())
    return buf.getvalue()


async def test_voices_list_info_and_presets(tts_bridge: BridgeProcess) -> None:
    status, listed = await get_json(f"{tts_bridge.url}/stream/v1/tts/voices")
    assert status == 200 and listed["total"] == len(listed["voices"])
    assert {"中文女", "中文男", "英文女", "英文男", "日语男", "韩语女", "粤语女"} <= set(
        listed["voices"]
    )
    status, info = await get_json(f"{tts_bridge.url}/stream/v1/tts/voices/info")
    female = info["voices"]["中文女"]
    assert female["type"] == "preset" and female["language"] == "zh-CN"
    assert female["gender"] == "female" and female["available"] and female["sample_rate"] > 0
    assert "xiaoyun" in female["aliases"] and info["preset_count"] >= 7
    for name in ("中文女", "xiaoyun", "XiaoYun"):
        status, one = await get_json(f"{tts_bridge.url}/stream/v1/tts/voices/{name}")
        assert status == 200 and one["name"] == "中文女"
    status, health = await get_json(f"{tts_bridge.url}/stream/v1/tts/health")
    assert health["status"] == "healthy" and health["sft_model_loaded"]
    assert not health["clone_available"] and health["voice_store"] == "ok"
    assert health["engines"][0]["backend"] == "light" and "中文女" in health["preset_voices"]


async def test_clone_voice_through_the_api(tts_bridge: BridgeProcess) -> None:
    url = tts_bridge.url
    name = "api-fox"
    status, voice = await create_voice(url, name, wav_of(4.0), prompt_text=FOX)
    try:
        assert status == 201, voice
        assert voice["type"] == "clone" and voice["reference_text"] == FOX
        assert voice["sample_rate"] == 16000 and 3900 <= voice["duration_ms"] <= 4100
        _, listed = await get_json(f"{url}/stream/v1/tts/voices")
        assert name in listed["voices"]
        status, again = await create_voice(url, name, wav_of(4.0), prompt_text=FOX)
        assert status == 409 and again["status"] == 40000003
        # the light engine cannot clone: a clear error, no substitute voice
        status, headers, body, _ = await request(
            "POST", f"{url}/stream/v1/tts", json={"text": "Hello.", "voice": name}
        )
        data = envelope(status, headers, body)
        assert status == 400 and "clone" in data["message"], data
    finally:
        async with aiohttp.ClientSession() as http:
            async with http.delete(f"{url}/stream/v1/tts/voices/{name}") as r:
                assert r.status == 200
            async with http.delete(f"{url}/stream/v1/tts/voices/{name}") as r:
                assert r.status == 404 and (await r.json())["status"] == 40000003
            async with http.delete(f"{url}/stream/v1/tts/voices/xiaoyun") as r:
                assert r.status == 409
    status, _ = await get_json(f"{url}/stream/v1/tts/voices/{name}")
    assert status == 404


async def test_clone_prompt_transcribed_when_omitted(tts_bridge: BridgeProcess) -> None:
    status, voice = await create_voice(
        tts_bridge.url, "fox-heard", (DATA / "en_fox.wav").read_bytes(), language="en"
    )
    try:
        assert status == 201, voice
        assert wer(FOX, voice["reference_text"]) <= 0.25, voice["reference_text"]
    finally:
        async with aiohttp.ClientSession() as http:
            await http.delete(f"{tts_bridge.url}/stream/v1/tts/voices/fox-heard")


@pytest.mark.parametrize(
    ("name", "audio", "status_code", "says"),
    [
        ("not-audio", b"this is not audio at all" * 100, 400, "Cannot decode"),
        ("too-short", "0.5", 400, "1-30 s"),
        ("too-long", "31", 400, "30 s limit"),
        ("xiaoyun", "3", 409, "alias of the preset voice 中文女"),
        ("中文男", "3", 409, "a preset voice"),
        ("refresh", "3", 409, "reserved"),
        (".hidden", "3", 400, "Invalid name"),
        ("", "3", 400, "name is required"),
    ],
)
async def test_clone_bad_input(
    tts_bridge: BridgeProcess, name: str, audio: bytes | str, status_code: int, says: str
) -> None:
    data = wav_of(float(audio)) if isinstance(audio, str) else audio
    status, body = await create_voice(tts_bridge.url, name, data, prompt_text="hello there")
    assert status == status_code and says in body["message"], body
    _, listed = await get_json(f"{tts_bridge.url}/stream/v1/tts/voices")
    assert listed["voices"].count(name) <= 1  # nothing stored


async def test_voices_folder_imported_at_start_and_refresh(
    strict_bridge: BridgeProcess, voices_dir: Path
) -> None:
    headers = {"X-NLS-Token": TOKEN}
    url = f"{strict_bridge.url}/stream/v1/tts/voices"
    deadline = time.monotonic() + 30
    while True:
        _, listed = await get_json(url, headers=headers)
        if "fox-dir" in listed["voices"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert "fox-dir" in listed["voices"], listed
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(f"{url}/refresh") as r:
                result = await r.json()
            assert r.status == 200 and result["unchanged"] == ["fox-dir"], result
            assert result["skipped"] == [
                {"file": "no-text.wav", "reason": "no transcript no-text.txt beside it"}
            ]
            (voices_dir / "fox-dir.txt").write_text("The quick brown fox.")
            async with http.post(f"{url}/refresh") as r:
                result = await r.json()
            assert result["imported"] == ["fox-dir"] and "fox-dir" in result["voices"]
            async with http.get(f"{url}/fox-dir") as r:
                voice = await r.json()
            assert voice["reference_text"] == "The quick brown fox." and voice["source"] == "dir"
    finally:
        async with aiohttp.ClientSession(headers=headers) as http:
            await http.delete(f"{url}/fox-dir")
