"""A TTS engine killed mid-synthesis, through the bridge: the WebSocket client gets TaskFailed
and the REST stream is cut within 3 s; the next request succeeds on another engine. Three real
light TTS engine processes on a nats-server of the test's own."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import BridgeProcess, EngineProcess, wait_engines
from tests.tts_client import FlowRun, decode, sdk_synthesize

EN = "The quick brown fox jumps over the lazy dog. It was a sunny day by the river."
LONG = " ".join([EN] * 12)  # about a minute of audio: still being made when the engine dies
LOST_WITHIN_S = 3.0


async def serving_engine(url: str, exclude: set[int]) -> int:
    """The pid of the engine that has a synthesis running (from /stream/v1/tts/health)."""
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(10):
            while True:
                async with http.get(f"{url}/stream/v1/tts/health") as r:
                    engines = (await r.json())["engines"]
                busy = [e["pid"] for e in engines if e["active"] > 0 and e["pid"] not in exclude]
                if busy:
                    return busy[0]
                await asyncio.sleep(0.1)


@pytest.mark.timeout(600)
async def test_engine_killed_mid_synthesis(own_nats: str, tmp_path: Path) -> None:
    engines = [EngineProcess(own_nats, tmp_path, task="tts").start() for _ in range(3)]
    bridge = BridgeProcess(own_nats, tmp_path).start()
    killed: set[int] = set()
    try:
        await asyncio.to_thread(wait_engines, own_nats, 3, 300, engines, "tts")

        # WebSocket: TaskFailed within 3 s of the kill
        run = FlowRun()
        frame = json.dumps(
            {
                "header": {"namespace": "SpeechLongSynthesizer", "name": "StartSynthesis",
                           "task_id": run.task_id, "message_id": run.task_id, "appkey": "k"},
                "payload": {"text": LONG, "voice": "英文男"},
            }
        )  # fmt: skip
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{bridge.ws_url}/ws/v1") as ws:
            await ws.send_str(frame)
            async with asyncio.timeout(60):
                while run.add(await ws.receive()) != "audio":
                    pass
            pid = await serving_engine(bridge.url, killed)
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
            began = time.monotonic()
            async with asyncio.timeout(10):
                async for msg in ws:
                    run.add(msg)
            lost_after = time.monotonic() - began
        failed = run.failure()
        assert failed and failed["status"] == 50000000, run.names()[-3:]
        assert "stopped responding" in failed["status_text"] and lost_after < LOST_WITHIN_S
        # the next one succeeds on another engine
        again = await asyncio.to_thread(
            sdk_synthesize, f"{bridge.ws_url}/ws/v1", EN, voice="英文男"
        )
        assert again.names() == ["SynthesisCompleted"] and decode(bytes(again.audio), "pcm")

        # REST: the stream is cut (an incomplete chunked body) within 3 s of the kill
        text = LONG[:1000]
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{bridge.url}/stream/v1/tts", json={"text": text}) as r:
                assert r.status == 200
                got = len(await r.content.readany())
                pid = await serving_engine(bridge.url, killed)
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
                began = time.monotonic()
                with pytest.raises(aiohttp.ClientPayloadError):
                    async with asyncio.timeout(10):
                        while chunk := await r.content.readany():
                            got += len(chunk)
                cut_after = time.monotonic() - began
            assert cut_after < LOST_WITHIN_S and got > 0
            async with http.post(f"{bridge.url}/stream/v1/tts", json={"text": EN}) as r:
                assert r.status == 200
                audio = decode(await r.read(), "pcm")
            assert audio.seconds > 3
    finally:
        bridge.stop()
        for engine in engines:
            engine.kill()
