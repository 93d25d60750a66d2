"""GET /, /health, /stream/v1/asr/health, /stream/v1/asr/models (live engine state), and the
OpenAPI document / HTML reference that only a DEBUG bridge serves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bus.client import Bus
from tests.conftest import BridgeProcess

TOKEN = "info-test-token-0123"


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, str]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers or {}) as r:
        text = await r.text()
        is_json = r.content_type == "application/json"
        return r.status, (await r.json() if is_json else None), text


async def live_engines(nats_url: str, task: str | None = None) -> list[Any]:
    bus = await Bus.connect(nats_url)
    try:
        return await bus.directory.wait_for(1, timeout=10, task=task)
    finally:
        await bus.close()


async def test_root(bridge: BridgeProcess) -> None:
    status, body, _ = await get(f"{bridge.url}/")
    assert status == 200
    assert body["message"] and body["version"] and body["description"]
    endpoints = body["endpoints"]
    assert endpoints["asr"] == "/stream/v1/asr"
    assert endpoints["openai_transcriptions"] == "/v1/audio/transcriptions"
    assert endpoints["asr_websocket"] == "/ws/v1/asr"
    assert "docs" not in endpoints  # DEBUG is off


async def health_and_engines(bridge: BridgeProcess, nats_url: str) -> tuple[int, Any, list]:
    """/health and the engines a fresh directory knows, once they agree: other tests' engines
    come and go on this shared bus, and a new directory hears each within a heartbeat."""
    deadline = time.monotonic() + 10
    while True:
        every = await live_engines(nats_url)
        status, body, _ = await get(f"{bridge.url}/health")
        if body["engines"] == len(every) or time.monotonic() > deadline:
            return status, body, every
        await asyncio.sleep(0.5)


async def test_health_endpoints_report_live_engines(bridge: BridgeProcess, nats_url: str) -> None:
    status, body, every = await health_and_engines(bridge, nats_url)
    assert status == 200 and body["nats_connected"] is True and body["engines"] == len(every)
    # TTS engines of other tests may share this bus: the ASR health lists the ASR ones
    engines = [e for e in every if e.task == "asr"]
    status, body, _ = await get(f"{bridge.url}/stream/v1/asr/health")
    assert status == 200 and body["status"] == "healthy" and body["model_loaded"] is True
    assert body["loaded_models"] == sorted({m.id for e in engines for m in e.models})
    assert body["device"] == "cpu"
    reported = {e["id"]: e for e in body["engines"]}
    assert set(reported) == {e.id for e in engines}
    for e in engines:
        item = reported[e.id]
        assert (item["backend"], item["device"], item["capacity"]) == (
            e.backend,
            e.device,
            e.capacity,
        )
        assert item["draining"] is False and item["active"] >= 0


async def test_models_from_live_state(bridge: BridgeProcess, nats_url: str) -> None:
    engines = await live_engines(nats_url, "asr")  # not satisfied by another test's TTS engine
    live = {m.id: (e, m) for e in engines for m in e.models}
    status, body, _ = await get(f"{bridge.url}/stream/v1/asr/models")
    assert status == 200
    assert body["total"] == body["loaded_count"] == len(live) == len(body["models"])
    assert sum(m["default"] for m in body["models"]) >= 1
    for model in body["models"]:
        engine, desc = live[model["id"]]
        assert model["name"] == desc.name and model["engine"] == engine.backend
        assert model["languages"] == desc.languages and model["loaded"] is True
        assert model["offline_model"]["exists"] is True and model["offline_model"]["path"]
        assert model["supports_realtime"] == desc.supports_realtime
        assert model["asr_model_mode"] == body["asr_model_mode"]
        assert engine.id in model["engines"]


async def test_docs_hidden_without_debug(bridge: BridgeProcess) -> None:
    for path in ("/docs", "/openapi.json"):
        status, _, _ = await get(f"{bridge.url}{path}")
        assert status == 404


@pytest.fixture(scope="module")
def debug_bridge(
    nats_url: str, light_engine: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BridgeProcess]:
    logs = tmp_path_factory.mktemp("logs")
    proc = BridgeProcess(nats_url, logs, DEBUG="true", APPTOKEN=TOKEN, HEALTH_TASKS="asr").start()
    yield proc
    proc.stop()


async def test_openapi_and_docs_with_debug(debug_bridge: BridgeProcess) -> None:
    status, spec, _ = await get(f"{debug_bridge.url}/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.1")
    paths = spec["paths"]
    for path, method in [
        ("/", "get"),
        ("/health", "get"),
        ("/stream/v1/asr", "post"),
        ("/stream/v1/asr/health", "get"),
        ("/stream/v1/asr/models", "get"),
        ("/ws/v1", "get"),
        ("/ws/v1/asr", "get"),
        ("/v1/audio/transcriptions", "post"),
        ("/v1/models", "get"),
        ("/openapi.json", "get"),
        ("/docs", "get"),
    ]:
        assert method in paths[path], path
        assert paths[path][method]["summary"]
    assert "101" in paths["/ws/v1/asr"]["get"]["responses"]
    status, root, _ = await get(f"{debug_bridge.url}/")
    assert root["endpoints"]["docs"] == "/docs"
    status, _, page = await get(f"{debug_bridge.url}/docs")
    assert status == 200 and page.startswith("<!doctype html>")
    for path in paths:
        assert path in page
    assert "<script" not in page and "http://" not in page and "https://" not in page


async def test_token_protects_health_and_models(debug_bridge: BridgeProcess) -> None:
    for path in ("/stream/v1/asr/health", "/stream/v1/asr/models"):
        for headers in ({}, {"X-NLS-Token": "wrong-token-0123456789"}):
            status, body, _ = await get(f"{debug_bridge.url}{path}", headers)
            assert status == 401 and body["status"] == 40000001, body
        status, body, _ = await get(f"{debug_bridge.url}{path}", {"X-NLS-Token": TOKEN})
        assert status == 200
    for path in ("/", "/health"):  # never protected
        status, _, _ = await get(f"{debug_bridge.url}{path}")
        assert status == 200


async def test_without_engines(own_nats: str, tmp_path: Path) -> None:
    """The bridge runs (liveness 200) but is not ready (503 degraded, with the reason); ASR is
    unhealthy and lists no model."""
    proc = BridgeProcess(own_nats, tmp_path).start()
    try:
        status, body, _ = await get(f"{proc.url}/health")
        assert status == 503 and body["status"] == "degraded", body
        assert body["reason"] == "No ASR or TTS engine is live"
        assert body["engines"] == 0 and body["nats_connected"] is True
        assert body["tasks"] == {"asr": 0, "tts": 0}
        status, body, _ = await get(f"{proc.url}/health/live")
        assert status == 200 and body["status"] == "alive"
        status, body, _ = await get(f"{proc.url}/stream/v1/asr/health")
        assert status == 200 and body["status"] == "unhealthy" and body["model_loaded"] is False
        status, body, _ = await get(f"{proc.url}/stream/v1/asr/models")
        assert status == 200 and body["models"] == [] and body["total"] == 0
    finally:
        proc.stop()
