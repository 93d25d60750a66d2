"""A bridge that gets SIGTERM drains (issue 14 item 3): it stops listening, lets live sessions
and requests finish for up to BRIDGE_DRAIN_TIMEOUT, then ends the rest with TaskFailed
"shutting down" and close code 1001. A real bridge process, nats-server and light engine."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import DATA, BridgeProcess
from tests.nls_client import read_pcm, silence

DRAIN_S = 15.0  # room for the finishing session's final decode on a slow, busy machine
NS = "SpeechTranscriber"
CHUNK = 3200  # 100 ms at 16 kHz


def directive(name: str, task_id: str, payload: dict[str, Any] | None = None) -> str:
    header = {"message_id": uuid.uuid4().hex, "task_id": task_id, "namespace": NS, "name": name}
    return json.dumps({"header": header, "payload": payload or {}})


class Session:
    """A raw NLS SpeechTranscriber client that records the events it gets."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.task_id = uuid.uuid4().hex
        self.events: list[dict[str, Any]] = []
        self.done = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def start(self) -> None:
        await self.ws.send_str(directive("StartTranscription", self.task_id))
        async with asyncio.timeout(10):
            while not self.events:
                await asyncio.sleep(0.02)
        assert self.events[0]["name"] == "TranscriptionStarted", self.events

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.events.append(json.loads(msg.data)["header"])
        self.done.set()

    def names(self) -> list[str]:
        return [e["name"] for e in self.events]


@pytest.fixture
async def held_audio() -> AsyncIterator[tuple[str, asyncio.Event, asyncio.Event]]:
    """An audio_address whose answer waits until `release` is set; `asked` is set when the
    bridge has requested it (so a REST request is in flight)."""
    asked, release = asyncio.Event(), asyncio.Event()

    async def fox(_: web.Request) -> web.Response:
        asked.set()
        await release.wait()
        return web.Response(body=(DATA / "en_fox.wav").read_bytes(), content_type="audio/wav")

    app = web.Application()
    app.router.add_get("/fox.wav", fox)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/fox.wav", asked, release
    release.set()
    await runner.cleanup()


async def until_refused(port: int, timeout: float = 5.0) -> None:
    """Wait until nothing accepts connections on the port any more."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        while True:
            with socket.socket() as s:
                s.setblocking(False)
                try:
                    await loop.sock_connect(s, ("127.0.0.1", port))
                except ConnectionRefusedError:
                    return
            await asyncio.sleep(0.05)


async def test_sigterm_drains_sessions_and_requests(
    nats_url: str, light_engine: object, tmp_path: Path, held_audio: Any
) -> None:
    address, asked, release = held_audio
    proc = BridgeProcess(
        nats_url,
        tmp_path,
        BRIDGE_DRAIN_TIMEOUT=str(DRAIN_S),
        ASR_ALLOW_PRIVATE_AUDIO_ADDRESS="true",
        ASR_IDLE_TIMEOUT="30",
    ).start()
    fox = read_pcm("en_fox.wav") + silence(500)
    half = len(fox) // 2 // CHUNK * CHUNK
    loop = asyncio.get_running_loop()
    try:
        async with aiohttp.ClientSession() as http:
            url = f"{proc.ws_url}/ws/v1"
            async with http.ws_connect(url) as ws_a, http.ws_connect(url) as ws_b:
                finisher, streamer = Session(ws_a), Session(ws_b)
                await finisher.start()
                await streamer.start()
                await ws_a.send_bytes(fox[:half])
                rest = asyncio.create_task(
                    http.post(f"{proc.url}/stream/v1/asr", params={"audio_address": address})
                )
                async with asyncio.timeout(10):
                    await asked.wait()  # the REST request is in flight

                proc.proc.send_signal(signal.SIGTERM)
                signalled = loop.time()
                await until_refused(proc.port)  # no new connections

                # a live session finishes: its remaining audio, Stop, every result
                release.set()
                for pos in range(half, len(fox), CHUNK):
                    await ws_a.send_bytes(fox[pos : pos + CHUNK])
                await ws_a.send_str(directive("StopTranscription", finisher.task_id))
                # a session that keeps streaming past the drain is ended
                async with asyncio.timeout(DRAIN_S + 5):
                    while not streamer.done.is_set():
                        await ws_b.send_bytes(silence(100))
                        await asyncio.sleep(0.1)  # the client's real-time pace
                ended = loop.time() - signalled
                async with asyncio.timeout(5):
                    await finisher.done.wait()
                async with asyncio.timeout(30):
                    response = await rest
                    body = await response.json()
                close_a, close_b = ws_a.close_code, ws_b.close_code
        names = finisher.names()
        assert names[-1] == "TranscriptionCompleted" and "SentenceEnd" in names, names
        assert close_a == 1000
        failed = streamer.events[-1]
        assert failed["name"] == "TaskFailed" and failed["status"] == 50000000, failed
        assert "shutting down" in failed["status_text"], failed
        assert failed["task_id"] == streamer.task_id
        assert close_b == 1001  # GOING_AWAY
        assert DRAIN_S - 0.5 <= ended <= DRAIN_S + 3, ended
        assert response.status == 200 and "fox" in body["result"].lower(), body
        assert await asyncio.to_thread(proc.proc.wait, 10) == 0
    finally:
        proc.stop()
