"""The CosyVoice backend through bus + bridge + clients, on the TEST DOUBLE of the upstream API
(tests/cosyvoice_double.py): a real engine process with TTS_BACKEND=cosyvoice whose
`cosyvoice.cli.cosyvoice` is the double, a real bridge and nats-server, real clients (aiohttp,
the NLS SDK, raw FlowingSpeechSynthesizer frames, openai).

The double speaks 60 ms of sine per character of text, in 0.2 s chunks when streaming; here
each chunk after the first waits COSYVOICE_DOUBLE_CHUNK_DELAY, so audio arriving before the
synthesis ends is visible at the client. How often the engine processed a clone prompt comes
from its live stats (GET /stream/v1/tts/health)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from funspeech.procs import free_port, nats_server_binary
from tests.conftest import DATA, BridgeProcess, EngineProcess, running_nats, wait_engines
from tests.cosyvoice_double import engine_env, expected_seconds, model_tree
from tests.harness import wait_port
from tests.tts_client import (
    FOX,
    check_subtitles,
    create_voice,
    decode,
    envelope,
    flowing,
    get_json,
    request,
    sdk_synthesize,
)

CHUNK_DELAY_S = 0.05  # the double: 0.2 s of audio per chunk, so 4x faster than real time
ZH = "你好，欢迎使用语音合成服务。今天天气很好，我们去公园散步吧。"
INSTRUCTION = "用开心的语气说"


@pytest.fixture(scope="module")
def double_bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    """A bridge and one CosyVoice engine (presets, clones, instructions) on the double."""
    root = tmp_path_factory.mktemp("cosyvoice")
    logs = tmp_path_factory.mktemp("logs")
    with running_nats(root / "jetstream") as url:
        env = engine_env(model_tree(root), TTS_MAX_SESSIONS="4",
                         COSYVOICE_DOUBLE_CHUNK_DELAY=str(CHUNK_DELAY_S))  # fmt: skip
        engine = EngineProcess(url, logs, task="tts", **env).start()
        bridge = BridgeProcess(url, logs).start()
        try:
            wait_engines(url, 1, timeout=120, procs=[engine], task="tts")
            yield bridge
        finally:
            bridge.stop()
            engine.stop()


async def engine_load(url: str) -> dict[str, float]:
    _, health = await get_json(f"{url}/stream/v1/tts/health")
    return health["engines"][0]["load"]


async def prompts_processed(url: str, expected: float, settle_s: float = 1.5) -> float:
    """The engine's count of processed prompts once it reads `expected` (heartbeats come
    every 0.5 s), and still after `settle_s` (a second processing would show by then)."""
    async with asyncio.timeout(10):
        while (await engine_load(url))["prompts_processed"] < expected:
            await asyncio.sleep(0.1)
    await asyncio.sleep(settle_s)
    return (await engine_load(url))["prompts_processed"]


def seconds_near(actual: float, text: str, rel: float = 0.03) -> bool:
    return abs(actual - expected_seconds(text)) <= rel * expected_seconds(text) + 0.05


async def test_presets_through_every_protocol(double_bridge: BridgeProcess) -> None:
    url = double_bridge.url
    status, _, body, _ = await request(
        "POST", f"{url}/stream/v1/tts", json={"text": ZH, "voice": "中文女", "sample_rate": 24000}
    )
    assert status == 200 and seconds_near(decode(body, "pcm", 24000).seconds, ZH)
    _, health = await get_json(f"{url}/stream/v1/tts/health")
    assert health["engines"][0]["backend"] == "cosyvoice" and health["clone_available"]
    assert set(health["engines"][0]["features"]) == {"clone", "instructions"}
    assert health["preset_voices"][:7] == ["中文女", "中文男", "英文女", "英文男", "日语男",
                                           "韩语女", "粤语女"]  # fmt: skip

    run = await asyncio.to_thread(
        sdk_synthesize, f"{double_bridge.ws_url}/ws/v1", ZH, voice="xiaogang", aformat="wav",
        sample_rate=22050, ex={"enable_subtitle": True},
    )  # fmt: skip
    assert run.failure() is None and run.names()[-1] == "SynthesisCompleted"
    audio = decode(bytes(run.audio), "wav")
    assert audio.rate == 22050 and seconds_near(audio.seconds, ZH)
    check_subtitles(run.subtitles(), audio.seconds * 1000, ZH)

    text = "Hello from the double."
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    speech = await client.audio.speech.create(
        model="cosyvoice", voice="alloy", input=text, response_format="flac"
    )
    audio = decode(speech.content, "flac")
    assert audio.rate == 24000 and seconds_near(audio.seconds, text)


async def test_streaming_chunks_arrive_before_completion(double_bridge: BridgeProcess) -> None:
    status, _, body, times = await request(
        "POST", f"{double_bridge.url}/stream/v1/tts", json={"text": ZH, "voice": "中文男"}
    )
    # ~1.7 s of model time for ~1.7 s of chunks: the first must come long before the end
    assert status == 200 and seconds_near(decode(body, "pcm").seconds, ZH)
    assert len(times) > 5 and times[0] < 0.25 * times[-1], times

    tokens = [ZH[i : i + 2] for i in range(0, len(ZH), 2)]
    run = await flowing(f"{double_bridge.ws_url}/ws/v1", tokens, {"voice": "中文女"})
    assert run.failure() is None
    first_end = run.order.index("SentenceEnd")
    assert run.order[:first_end].count("audio") > 3  # the first sentence streamed in pieces
    assert [e["subtitles"][0]["text"] for e in run.payloads("SentenceEnd")] == [
        "你好，欢迎使用语音合成服务。",
        "今天天气很好，我们去公园散步吧。",
    ]


async def test_cloned_voice_zero_shot_and_instructions(double_bridge: BridgeProcess) -> None:
    url = double_bridge.url
    before = (await engine_load(url))["prompts_processed"]
    name = "double-fox"
    status, voice = await create_voice(url, name, (DATA / "en_fox.wav").read_bytes(),
                                       prompt_text=FOX, language="en")  # fmt: skip
    assert status == 201, voice
    try:
        assert voice["available"] and voice["type"] == "clone"
        text = "A cloned voice says hello. It speaks a second sentence too."
        for _ in range(2):  # at once (no restart, no wait), and again: zero-shot, cached prompt
            status, _, body, _ = await request(
                "POST", f"{url}/stream/v1/tts", json={"text": text, "voice": name}
            )
            assert status == 200 and seconds_near(decode(body, "pcm").seconds, text)
        assert await prompts_processed(url, before + 1) == before + 1  # processed once

        # instructions: NLS `prompt` and OpenAI `instructions`; prompt + instruction once
        status, _, body, _ = await request(
            "POST",
            f"{url}/stream/v1/tts",
            json={"text": text, "voice": name, "prompt": INSTRUCTION, "format": "mp3"},
        )
        assert status == 200 and seconds_near(decode(body, "mp3").seconds, text, 0.06)
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        async with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice={"id": name}, input=text, instructions=INSTRUCTION,  # type: ignore[arg-type]
            response_format="wav",
        ) as response:  # fmt: skip
            data = await response.read()
        assert seconds_near(decode(data, "wav").seconds, text)
        assert await prompts_processed(url, before + 2) == before + 2

        # the flowing protocol with the clone and the same instruction: cached too
        start = {"voice": name, "prompt": INSTRUCTION, "enable_subtitle": True}
        run = await flowing(f"{double_bridge.ws_url}/ws/v1/tts", text.split(" "), start)
        assert run.failure() is None and run.names()[-1] == "SynthesisCompleted"
        assert await prompts_processed(url, before + 2, settle_s=1.0) == before + 2
    finally:
        async with (
            aiohttp.ClientSession() as http,
            http.delete(f"{url}/stream/v1/tts/voices/{name}") as r,
        ):
            assert r.status == 200
    status, headers, body, _ = await request(
        "POST", f"{url}/stream/v1/tts", json={"text": "Gone?", "voice": name}
    )
    assert status == 400 and "Unknown voice" in envelope(status, headers, body)["message"]


@pytest.mark.parametrize(
    ("json_body", "says"),
    [
        ({"text": "你好。", "voice": "中文女", "prompt": INSTRUCTION}, "cloned voices only"),
        ({"text": "你好。", "voice": "nobody-here"}, "Unknown voice"),
    ],
)
async def test_errors_are_clear(
    double_bridge: BridgeProcess, json_body: dict[str, Any], says: str
) -> None:
    status, headers, body, _ = await request(
        "POST", f"{double_bridge.url}/stream/v1/tts", json=json_body
    )
    assert status == 400 and says in envelope(status, headers, body)["message"]
    start = {k: v for k, v in json_body.items() if k != "text"}
    run = await flowing(f"{double_bridge.ws_url}/ws/v1", ["你好。"], start)
    failed = run.failure()
    assert failed and failed["status"] == 40000003 and says in failed["status_text"]


# ---------------------------------------------------------------- without JetStream


@pytest.fixture
def no_jetstream(tmp_path: Path) -> Iterator[BridgeProcess]:
    """A nats-server without JetStream, an engine on the double and a bridge."""
    port = free_port()
    server = subprocess.Popen(
        [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"nats://127.0.0.1:{port}"
    try:
        wait_port(port)
        engine = EngineProcess(url, tmp_path, task="tts", **engine_env(model_tree(tmp_path)))
        engine.start()
        bridge = BridgeProcess(url, tmp_path).start()
        try:
            wait_engines(url, 1, timeout=120, procs=[engine], task="tts")
            yield bridge
        finally:
            bridge.stop()
            engine.stop()
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(10)


async def test_without_jetstream_presets_work_and_clones_say_why(
    no_jetstream: BridgeProcess,
) -> None:
    url = no_jetstream.url
    status, listed = await get_json(f"{url}/stream/v1/tts/voices")
    assert status == 200 and "中文女" in listed["voices"]
    assert "JetStream" in listed["message"] and "-js" in listed["message"]
    status, voice = await create_voice(url, "no-store", (DATA / "en_fox.wav").read_bytes(),
                                       prompt_text=FOX)  # fmt: skip
    assert status == 503 and "-js" in voice["message"]
    _, health = await get_json(f"{url}/stream/v1/tts/health")
    assert "JetStream" in health["voice_store"]
    status, _, body, _ = await request("POST", f"{url}/stream/v1/tts", json={"text": ZH})
    assert status == 200 and seconds_near(decode(body, "pcm").seconds, ZH)
