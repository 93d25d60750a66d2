"""CORS (issue 14 item 4): cross-origin access only for CORS_ALLOW_ORIGINS (default: none), `*`
only without credentials. Real bridge processes on a real nats-server (no engine needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ROOT, BridgeProcess

APP, OTHER = "https://app.example", "https://evil.example"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "X-NLS-Token, Content-Type",
}


@pytest.fixture
def bridge_with(nats_url: str, tmp_path: Path) -> Iterator[Callable[..., BridgeProcess]]:
    started: list[BridgeProcess] = []

    def start(**env: str) -> BridgeProcess:
        # HEALTH_TASKS="": /health answers 200 without engines (CORS is what is tested)
        proc = BridgeProcess(nats_url, tmp_path, **{"HEALTH_TASKS": "", **env}).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


async def ask(
    url: str, method: str, origin: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, headers={"Origin": origin, **(headers or {})}) as r,
    ):
        return r.status, dict(r.headers)


def cors_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower().startswith("access-control-")}


async def test_default_allows_no_cross_origin_access(
    bridge_with: Callable[..., BridgeProcess],
) -> None:
    bridge = bridge_with()
    status, headers = await ask(f"{bridge.url}/health", "GET", OTHER)
    assert status == 200 and cors_headers(headers) == {}, headers
    status, headers = await ask(f"{bridge.url}/stream/v1/asr", "OPTIONS", OTHER, PREFLIGHT)
    assert status == 403 and cors_headers(headers) == {}, headers


async def test_listed_origins(bridge_with: Callable[..., BridgeProcess]) -> None:
    bridge = bridge_with(CORS_ALLOW_ORIGINS=f"{APP}, http://localhost:5173/")
    for origin in (APP, "http://localhost:5173"):
        status, headers = await ask(f"{bridge.url}/health", "GET", origin)
        assert status == 200 and headers["Access-Control-Allow-Origin"] == origin
        assert "Access-Control-Allow-Credentials" not in headers
        assert "task_id" in headers["Access-Control-Expose-Headers"]
        assert "Origin" in headers["Vary"]
    status, headers = await ask(f"{bridge.url}/no/such/path", "GET", APP)
    assert status == 404 and headers["Access-Control-Allow-Origin"] == APP
    status, headers = await ask(f"{bridge.url}/health", "GET", OTHER)
    assert status == 200 and cors_headers(headers) == {} and "Origin" in headers["Vary"]
    # preflight
    status, headers = await ask(f"{bridge.url}/stream/v1/asr", "OPTIONS", APP, PREFLIGHT)
    assert status == 204 and headers["Access-Control-Allow-Origin"] == APP, headers
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert headers["Access-Control-Allow-Headers"] == PREFLIGHT["Access-Control-Request-Headers"]
    assert int(headers["Access-Control-Max-Age"]) > 0
    status, headers = await ask(f"{bridge.url}/stream/v1/asr", "OPTIONS", OTHER, PREFLIGHT)
    assert status == 403 and cors_headers(headers) == {}, headers


async def test_credentials_for_listed_origins(bridge_with: Callable[..., BridgeProcess]) -> None:
    bridge = bridge_with(CORS_ALLOW_ORIGINS=APP, CORS_ALLOW_CREDENTIALS="true")
    status, headers = await ask(f"{bridge.url}/health", "GET", APP)
    assert status == 200 and headers["Access-Control-Allow-Origin"] == APP
    assert headers["Access-Control-Allow-Credentials"] == "true"


async def test_any_origin_without_credentials(bridge_with: Callable[..., BridgeProcess]) -> None:
    bridge = bridge_with(CORS_ALLOW_ORIGINS="*")
    status, headers = await ask(f"{bridge.url}/health", "GET", OTHER)
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in headers
    status, headers = await ask(f"{bridge.url}/stream/v1/asr", "OPTIONS", OTHER, PREFLIGHT)
    assert status == 204 and headers["Access-Control-Allow-Origin"] == "*"


def test_any_origin_with_credentials_is_refused_at_start(nats_url: str) -> None:
    env = {
        **os.environ,
        "NATS_URL": nats_url,
        "LOG_FILE": "",
        "PORT": "0",
        "CORS_ALLOW_ORIGINS": "*",
        "CORS_ALLOW_CREDENTIALS": "true",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "bridge"], cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    assert proc.returncode != 0
    assert b"CORS_ALLOW_CREDENTIALS" in proc.stderr and b"CORS_ALLOW_ORIGINS=*" in proc.stderr, (
        proc.stderr[-2000:]
    )
