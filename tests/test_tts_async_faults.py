"""Async TTS jobs survive faults: engines killed (-9) and restarted while jobs run, nats-server
killed and restarted on its file store, a bridge killed and replaced. Every accepted job ends
SUCCESS with its audio complete and in order (tests/tts_async_client.check_complete)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import nats
import pytest

from bus.jobs import JobStore
from bus.subjects import DEFAULT as SUBJECTS
from bus.voices import VoiceStore
from tests.harness import BridgeProcess, EngineProcess, RestartableNats, wait_engines
from tests.tts_async_client import (
    check_complete,
    download,
    finished,
    poll,
    request,
    sentences_text,
    submit,
    wav_ms,
)

ENGINE_ENV = {"TTS_MAX_SESSIONS": "3", "TTS_ASYNC_PART_CHARS": "200"}  # 8 parts a job
FOX = Path(__file__).parent / "data" / "en_fox.wav"


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[RestartableNats]:
    server = RestartableNats(tmp_path)
    server.start()
    yield server
    if server.proc is not None:
        server.proc.stop()


class Engines:
    def __init__(self, url: str, logs: Path) -> None:
        self.url = url
        self.logs = logs
        self.procs: list[EngineProcess] = []

    def start(self, index: int | None = None) -> EngineProcess:
        proc = EngineProcess(self.url, self.logs, task="tts", **ENGINE_ENV).start()
        if index is None:
            self.procs.append(proc)
        else:
            self.procs[index] = proc
        return proc

    def wait(self, count: int = 2) -> None:
        wait_engines(self.url, count, timeout=180, procs=self.procs, task="tts")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.alive():
                proc.stop()


@pytest.fixture
def engines(bus: RestartableNats, tmp_path: Path) -> Iterator[Engines]:
    group = Engines(bus.url, tmp_path)
    group.start()
    group.start()
    try:
        group.wait()
        yield group
    finally:
        group.stop()


@pytest.fixture
def bridge(bus: RestartableNats, engines: Engines, tmp_path: Path) -> Iterator[BridgeProcess]:
    proc = BridgeProcess(bus.url, tmp_path).start()
    yield proc
    if proc.alive():
        proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def submit_jobs(http: aiohttp.ClientSession, url: str, count: int) -> dict[str, str]:
    texts = [sentences_text(40, 40 * i) for i in range(count)]
    return {await submit(http, url, request(text)): text for text in texts}


async def mid_job(http: aiohttp.ClientSession, url: str, ids: list[str]) -> None:
    """Until some job is part way through (bounded)."""
    async with asyncio.timeout(120):
        while True:
            for task_id in ids:
                status, answer = await poll(http, url, task_id)
                data = answer.get("data") or {}
                if status == 200 and 0 < data["parts_done"] < data["parts_total"]:
                    return
            await asyncio.sleep(0.2)


async def all_complete(http: aiohttp.ClientSession, url: str, jobs: dict[str, str]) -> None:
    for task_id, text in jobs.items():
        answer = await finished(http, url, task_id, 240)
        status, _, audio = await download(http, answer["data"]["audio_address"])
        assert status == 200
        check_complete(answer, text, wav_ms(audio))


@pytest.mark.timeout(600)
async def test_engines_killed_and_restarted(
    engines: Engines, bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    """kill -9 one of two engines three times while jobs run (a new one started each time),
    then restart one gracefully: every job completes, every sentence once and in order."""
    jobs = await submit_jobs(http, bridge.url, 3)
    for round_ in range(3):
        await mid_job(http, bridge.url, list(jobs))
        victim = round_ % 2
        engines.procs[victim].kill()
        engines.start(victim)
        await asyncio.to_thread(engines.wait)  # both serve again before the next fault
    engines.procs[0].stop()  # SIGTERM: drains (finishes or hands back its items)
    engines.start(0)
    await all_complete(http, bridge.url, jobs)


@pytest.mark.timeout(600)
async def test_nats_server_and_bridge_restarts(
    bus: RestartableNats,
    engines: Engines,
    bridge: BridgeProcess,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """nats-server killed and started again on its store while jobs run; then the bridge
    killed and replaced. Engines and bridges reconnect: pull consumers and KV watchers go on,
    every job completes, new jobs spread over both engines."""
    nc = await nats.connect(bus.url, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    try:
        voices = await VoiceStore.open(nc, SUBJECTS)
        changed: list[str] = []
        await voices.watch(changed.append)  # the watcher every engine runs on the voices
        jobs = await submit_jobs(http, bridge.url, 3)
        await mid_job(http, bridge.url, list(jobs))

        bus.kill()
        bus.start()
        async with asyncio.timeout(60):  # a KV watcher made before the restart still hears
            while "after-restart" not in changed:
                with contextlib.suppress(Exception):  # the client may still be reconnecting
                    await voices.put("after-restart", FOX.read_bytes(), text="the fox",
                                     sample_rate=16000, duration_ms=3000)  # fmt: skip
                await asyncio.sleep(1.0)
        await voices.delete("after-restart")
        await all_complete(http, bridge.url, jobs)

        more = await submit_jobs(http, bridge.url, 2)
        await mid_job(http, bridge.url, list(more))
        bridge.kill()  # no bridge-local state: another answers for every job
        replacement = BridgeProcess(bus.url, tmp_path).start()
        try:
            await all_complete(http, replacement.url, {**jobs, **more})
        finally:
            replacement.stop()
        store = await JobStore.open(nc, SUBJECTS)
        served = set()
        for task_id in more:
            job = await store.get(task_id)
            assert job is not None
            served |= set(job.engines)
        assert len(served) == 2, served  # both engines took parts after the restart
    finally:
        await nc.close()
