"""Operations: Prometheus metrics scraped from a real bridge (text format parsed by
prometheus_client.parser), JSON logs that follow one session from the bridge to its engine, and
readiness (/health) against liveness (/health/live)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bus.client import Bus
from bus.jobs import JobStore
from bus.schemas import TtsParams
from tests.harness import BridgeProcess, EngineProcess, nls_frame, wait_engines
from tests.nls_client import read_pcm, transcribe

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(url: str) -> tuple[str, Samples]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as r:
        assert r.status == 200
        text = await r.text()
        kind = r.headers["Content-Type"]
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return kind, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def find(samples: Samples, name: str, where: Callable[[dict[str, str]], bool]) -> list[float]:
    return [v for (n, ls), v in samples.items() if n == name and where(dict(ls))]


async def until_scraped(url: str, check: Callable[[Samples], bool], timeout: float = 10) -> Samples:
    """Scrape until `check` holds (engine figures come with the next heartbeat)."""
    async with asyncio.timeout(timeout):
        while True:
            _, samples = await scrape(url)
            if check(samples):
                return samples
            await asyncio.sleep(0.2)


async def start_with_model(ws_url: str, model: str) -> dict[str, Any]:
    """A StartTranscription for a model no engine has: the TaskFailed header."""
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{ws_url}/ws/v1") as ws:
        payload = {"format": "pcm", "sample_rate": 16000, "customization_id": model}
        await ws.send_str(nls_frame("StartTranscription", uuid.uuid4().hex, payload))
        return json.loads((await ws.receive(timeout=10)).data)["header"]


async def test_metrics_scrape(bridge: BridgeProcess, light_engine: EngineProcess) -> None:
    """A completed session and a refused one move the session, chunk, event and latency
    series of the bridge; the engine's own figures come through its heartbeats."""
    kind, before = await scrape(bridge.url)
    assert kind.startswith("text/plain") and "version=" in kind, kind
    engine = f"-{light_engine.pid}"
    run = await asyncio.to_thread(transcribe, f"{bridge.ws_url}/ws/v1", read_pcm("en_fox.wav"))
    assert run.names()[-1] == "TranscriptionCompleted", run.names()
    failed = await start_with_model(bridge.ws_url, "no-such-model")
    assert failed["status"] == 40000003, failed

    def mine(labels: dict[str, str]) -> bool:
        return labels["engine"].endswith(engine)

    def engine_sessions(samples: Samples) -> float:
        return sum(find(samples, "funspeech_engine_sessions_total", mine))

    after = await until_scraped(bridge.url, lambda s: engine_sessions(s) > engine_sessions(before))

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("funspeech_sessions_opened_total", task="asr") >= 1
    assert delta("funspeech_sessions_completed_total", task="asr") >= 1
    assert delta("funspeech_sessions_failed_total", task="asr", code="40000003") >= 1
    assert value(after, "funspeech_sessions_active", task="asr") == 0
    assert delta("funspeech_audio_chunks_total") >= 40  # 4.4 s in 100 ms chunks
    assert delta("funspeech_audio_bytes_total") >= len(read_pcm("en_fox.wav"))
    assert delta("funspeech_events_total", task="asr", type="end") >= 1
    assert delta("funspeech_events_total", task="asr", type="completed") >= 1
    for histogram in ("result_latency", "first_result", "final_latency"):
        assert delta(f"funspeech_{histogram}_seconds_count") >= 1, histogram
    # capacity and load, per task and per engine (labels name the engine and its host)
    assert value(after, "funspeech_engines", task="asr") >= 1
    capacity = find(after, "funspeech_engine_capacity", lambda ls: ls["engine"].endswith(engine))
    assert capacity and capacity[0] >= 1
    assert value(after, "funspeech_capacity", task="asr") >= capacity[0]
    labels = next(dict(ls) for (n, ls) in after if n == "funspeech_engine_capacity")
    assert set(labels) == {"task", "engine", "host", "device", "backend"}
    assert find(after, "funspeech_engine_chunk_latency_seconds_count", mine)[0] >= 1
    assert find(after, "funspeech_engine_chunks_total", mine)[0] >= 40
    assert find(after, "funspeech_engine_outbox_depth", mine) == [0.0]
    assert value(after, "funspeech_nats_connected") == 1
    assert value(after, "process_resident_memory_bytes") > 0


async def test_job_queue_metrics(own_nats: str, tmp_path: Path) -> None:
    """Async job items waiting in JetStream show as funspeech_job_items_queued (no engine
    takes them here)."""
    proc = BridgeProcess(own_nats, tmp_path, HEALTH_TASKS="").start()
    bus = await Bus.connect(own_nats)
    try:
        _, samples = await scrape(proc.url)
        assert value(samples, "funspeech_job_items_queued") == 0  # no queue yet: no series
        store = await JobStore.open(bus.nc, bus.subjects)
        # a worker's consumer, as an engine's would be (here nobody fetches from it)
        subject = f"{bus.subjects.prefix}.jobs.tts.work.*"
        await store.js.pull_subscribe(subject, durable="test_workers", stream=store.stream)
        for _ in range(3):
            await store.submit("Hello there.", TtsParams())
        samples = await until_scraped(
            proc.url,
            lambda s: value(s, "funspeech_job_items_queued", consumer="test_workers") == 3,
        )
        assert value(samples, "funspeech_job_items_running", consumer="test_workers") == 0
    finally:
        await bus.close()
        proc.stop()


async def test_metrics_can_be_turned_off(own_nats: str, tmp_path: Path) -> None:
    proc = BridgeProcess(own_nats, tmp_path, METRICS_ENABLED="false").start()
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{proc.url}/metrics") as r:
            assert r.status == 404
    finally:
        proc.stop()


async def test_readiness_follows_the_engines(own_nats: str, tmp_path: Path) -> None:
    """/health: 503 degraded while a task of HEALTH_TASKS has no live engine, 200 once it
    has; /health/live: 200 throughout."""
    proc = BridgeProcess(own_nats, tmp_path, HEALTH_TASKS="asr").start()
    engine = EngineProcess(own_nats, tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{proc.url}/health") as r:
                body = await r.json()
                assert r.status == 503 and body["status"] == "degraded", body
                assert body["reason"] == "No ASR engine is live"
            engine.start()
            await asyncio.to_thread(wait_engines, own_nats, 1, 60, [engine], "asr")
            async with asyncio.timeout(5):
                while True:
                    async with http.get(f"{proc.url}/health") as r:
                        if r.status == 200:
                            body = await r.json()
                            break
                    await asyncio.sleep(0.1)
            assert body["status"] == "ok" and body["tasks"]["asr"] == 1, body
            engine.stop()
            async with asyncio.timeout(10):  # its last heartbeat says it is gone
                while True:
                    async with http.get(f"{proc.url}/health") as r:
                        if r.status == 503:
                            break
                    await asyncio.sleep(0.1)
            async with http.get(f"{proc.url}/health/live") as r:
                assert r.status == 200
    finally:
        engine.stop()
        proc.stop()


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is one JSON object


async def test_json_logs_follow_a_session(own_nats: str, tmp_path: Path) -> None:
    """LOG_FORMAT=json: every line of bridge and engine is a JSON object; the session's lines
    carry the client's task_id on both sides, with its session and engine ids."""
    env = {"LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG"}
    engine = EngineProcess(own_nats, tmp_path, **env).start()
    proc = BridgeProcess(own_nats, tmp_path, HEALTH_TASKS="asr", **env).start()
    task_id = uuid.uuid4().hex
    try:
        await asyncio.to_thread(wait_engines, own_nats, 1, 60, [engine], "asr")
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{proc.ws_url}/ws/v1") as ws:
            start = {"format": "pcm", "sample_rate": 16000}
            await ws.send_str(nls_frame("StartTranscription", task_id, start))
            started = json.loads((await ws.receive(timeout=10)).data)
            session_id = started["payload"]["session_id"]
            await ws.send_bytes(read_pcm("en_fox.wav"))
            await ws.send_str(nls_frame("StopTranscription", task_id))
            async with asyncio.timeout(60):
                async for msg in ws:
                    if json.loads(msg.data)["header"]["name"] == "TranscriptionCompleted":
                        break
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the bridge's session line comes after the close
            bridge_lines = [r for r in json_lines(proc.log()) if r.get("task_id") == task_id]
            if any("completed after" in r["message"] for r in bridge_lines):
                break
            await asyncio.sleep(0.1)
        engine_lines = [r for r in json_lines(engine.log()) if r.get("task_id") == task_id]
    finally:
        proc.stop()
        engine.stop()
    for record in json_lines(proc.log()) + json_lines(engine.log()):
        assert {"time", "level", "logger", "pid", "message", "component"} <= set(record)
    end = next(r for r in bridge_lines if "completed after" in r["message"])
    assert engine_lines, engine.log()[-3000:]
    engine_id = engine_lines[0]["engine_id"]
    assert engine_id.endswith(f"-{engine.pid}")
    assert end["session_id"] == session_id and end["engine_id"] == engine_id, end
    for record in [r for r in bridge_lines if "session_id" in r] + engine_lines:
        assert record["session_id"] == session_id, record
        assert record["engine_id"] == engine_id, record
    assert {r["component"] for r in engine_lines} == {"engine-cpu"}
