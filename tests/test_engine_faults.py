"""Capacity, engine loss and drain, each on a bus of its own with real engine processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from bus.client import Bus, BusError, TtsMessage
from bus.schemas import TtsParams
from tests.harness import BridgeProcess, EngineProcess, RestartableNats, nls_frame
from tests.nls_client import read_pcm, transcribe


def start_frame(task_id: str) -> str:
    payload = {"format": "pcm", "sample_rate": 16000}
    return nls_frame("StartTranscription", task_id, payload, appkey="k" * 8)


async def open_ws(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(url)
    await ws.send_str(start_frame(uuid.uuid4().hex))
    reply = json.loads((await ws.receive(timeout=10)).data)["header"]
    assert reply["name"] == "TranscriptionStarted", reply
    return ws


async def next_failure(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> dict:
    async with asyncio.timeout(timeout):
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                header = json.loads(msg.data)["header"]
                if header["name"] == "TaskFailed":
                    return header
    raise AssertionError("connection closed without TaskFailed")


async def test_full_engines_answer_40000005(own_nats: str, tmp_path: Path) -> None:
    engine = EngineProcess(own_nats, tmp_path, ASR_MAX_SESSIONS="1").start()
    bridge = BridgeProcess(own_nats, tmp_path).start()
    bus = await Bus.connect(own_nats)
    try:
        await bus.directory.wait_for(1, 60)
        async with aiohttp.ClientSession() as http:
            first = await open_ws(http, f"{bridge.ws_url}/ws/v1")
            async with http.ws_connect(f"{bridge.ws_url}/ws/v1") as second:
                began = time.monotonic()
                await second.send_str(start_frame(uuid.uuid4().hex))
                failed = await next_failure(second, 5)
                assert failed["status"] == 40000005, failed
                assert time.monotonic() - began < 1.0, "a full bus answers at once"
            await first.close()
        await bus.directory.wait_for(1, 10, where=lambda e: e.active == 0)  # the slot is free
        run = await asyncio.to_thread(transcribe, f"{bridge.ws_url}/ws/v1", read_pcm("en_fox.wav"))
        assert run.names()[-1] == "TranscriptionCompleted", run.events
    finally:
        await bus.close()
        bridge.stop()
        engine.stop()


async def test_killed_engine_fails_session_fast_and_next_session_works(
    own_nats: str, tmp_path: Path
) -> None:
    engines = [EngineProcess(own_nats, tmp_path).start() for _ in range(2)]
    bridge = BridgeProcess(own_nats, tmp_path).start()
    bus = await Bus.connect(own_nats)
    try:
        await bus.directory.wait_for(2, 60)
        async with aiohttp.ClientSession() as http:
            ws = await open_ws(http, f"{bridge.ws_url}/ws/v1")
            await ws.send_bytes(read_pcm("en_fox.wav")[:16000])
            # a heartbeat reports which engine holds the session
            busy = await bus.directory.wait_for(1, 5, where=lambda e: e.active == 1)
            assert len(busy) == 1, bus.directory.engines()
            os.kill(busy[0].pid, signal.SIGKILL)
            killed_at = time.monotonic()
            failed = await next_failure(ws, 5)
            assert time.monotonic() - killed_at < 3.0
            assert failed["status"] == 50000000 and "engine" in failed["status_text"]
            await ws.close()
        run = await asyncio.to_thread(transcribe, f"{bridge.ws_url}/ws/v1", read_pcm("en_fox.wav"))
        assert run.names()[-1] == "TranscriptionCompleted", run.events
    finally:
        await bus.close()
        bridge.stop()
        for engine in engines:
            engine.kill()


async def test_sigterm_drains_live_session(own_nats: str, tmp_path: Path) -> None:
    """An engine told to stop takes no new session but finishes the one it has."""
    engine = EngineProcess(own_nats, tmp_path).start()
    bus = await Bus.connect(own_nats)
    try:
        await bus.directory.wait_for(1, 60)
        session = await bus.open_asr()
        await session.send(read_pcm("en_fox.wav"))
        assert engine.proc is not None
        engine.proc.send_signal(signal.SIGTERM)
        await bus.directory.wait_for(1, 5, where=lambda e: e.draining)
        with pytest.raises(BusError) as err:  # a draining engine takes no new session
            await bus.open_asr()
        assert err.value.code in (40000005, 50000000)
        await session.stop()
        events = [e async for e in session]
        assert events[-1].type == "completed", events
        assert any(e.type == "end" and "fox" in e.text.lower() for e in events), events
        assert await asyncio.to_thread(engine.proc.wait, 30) == 0
    finally:
        await bus.close()
        engine.kill()


async def test_one_shots_in_flight_outlive_a_nats_restart(tmp_path: Path) -> None:
    """A one-shot recognition and a synthesis sent while nats-server hangs, which is then
    killed (what it had not delivered is gone) and started again: the client sends both again
    once it is back and gets its answers, instead of waiting out their timeouts."""
    server = RestartableNats(tmp_path)
    server.start()
    engines = [
        EngineProcess(server.url, tmp_path, ASR_BACKEND="light").start(),
        EngineProcess(server.url, tmp_path, task="tts").start(),
    ]
    bus = await Bus.connect(server.url)
    try:
        await bus.directory.wait_for(1, 120, task="asr")
        await bus.directory.wait_for(1, 120, task="tts")

        async def speak() -> list[TtsMessage]:
            text = "The quick brown fox jumps over the lazy dog."
            return [m async for m in bus.synthesize(text, TtsParams(format="pcm"), timeout=60)]

        assert server.proc is not None
        sent = bus.nc.stats["out_msgs"]
        server.proc.signal(signal.SIGSTOP)  # the requests reach the client's socket, no further
        recognition = asyncio.create_task(bus.recognize(read_pcm("en_fox.wav"), timeout=60))
        synthesis = asyncio.create_task(speak())
        async with asyncio.timeout(10):
            while bus.nc.stats["out_msgs"] < sent + 2:
                await asyncio.sleep(0.01)
        server.kill()
        began = time.monotonic()
        server.start()
        result = await recognition
        assert {"quick", "fox", "lazy", "dog"} <= set(result.text.lower().replace(".", "").split())
        messages = await synthesis
        assert messages[-1].kind == "completed", [m.kind for m in messages]
        assert sum(len(m.audio) for m in messages if m.kind == "audio") > 16000
        # both well inside their 60 s timeouts: sent again on the reconnect
        assert time.monotonic() - began < 30
    finally:
        await bus.close()
        for engine in engines:
            engine.kill()
        if server.proc is not None:
            server.proc.kill()
