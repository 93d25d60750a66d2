"""The OpenAPI document at /openapi.json tells the truth: schemathesis (`--checks all`) runs
against a live DEBUG bridge, a real nats-server and a real light engine, with auth off and on.

The ASR engine serves whisper-tiny.en only and the TTS engine is CosyVoice on its test double
(tests/cosyvoice_double.py: presets, cloning, instructions), on a nats-server of this module's
own, so schema-valid requests (which are decoded and synthesized) stay cheap.
tests/schemathesis_hooks.py supplies what a schema cannot say (real audio bodies, a reachable
audio_address, voices that exist)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from aiohttp import web

from bus.jobs import JobStore
from bus.schemas import TtsParams
from bus.subjects import DEFAULT as SUBJECTS
from tests.conftest import ROOT, BridgeProcess, EngineProcess, running_nats, wait_engines
from tests.cosyvoice_double import engine_env, model_tree
from tests.schemathesis_hooks import speech

TOKEN, APPKEY = "openapi-token-0123456789", "openapi-appkey"
ST_TIMEOUT_S = 300
SEED = "20261130"
# A WebSocket route answers a handshake with 101; schemathesis' defaults know only 2xx..5xx.
WEBSOCKET_STATUSES = """
[[operations]]
include-path-regex = "^/ws/"
checks.not_a_server_error.expected-statuses = ["101", "2xx", "3xx", "4xx"]
checks.positive_data_acceptance.expected-statuses = [
  "101", "2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
"""
AUTH = f"""
[auth.openapi.nlsToken]
api_key = "{TOKEN}"
[auth.openapi.appkey]
api_key = "{APPKEY}"
[auth.openapi.bearer]
bearer = "{TOKEN}"
"""


@pytest.fixture(scope="module")
def tiny_bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A nats-server with an ASR engine serving whisper-tiny.en and a TTS engine on the
    CosyVoice test double."""
    logs = tmp_path_factory.mktemp("logs")
    with running_nats(tmp_path_factory.mktemp("jetstream")) as url:
        engines = [
            EngineProcess(
                url,
                logs,
                ASR_BACKEND="light",
                ASR_LIGHT_MODEL="whisper-tiny.en",
                ASR_LIGHT_MODELS="whisper-tiny.en",
            ).start(),
            EngineProcess(
                url,
                logs,
                task="tts",
                **engine_env(
                    model_tree(tmp_path_factory.mktemp("cosyvoice")), TTS_MAX_SESSIONS="4"
                ),
            ).start(),
        ]
        try:
            wait_engines(url, 2, timeout=120, procs=engines)
            yield url
        finally:
            for engine in engines:
                engine.stop()


@pytest.fixture(scope="module")
def finished_job(tiny_bus: str) -> str:
    """A finished async TTS job, done by the bus's TTS engine (the CosyVoice double), so the
    poll and the audio download reach more than 404."""

    async def make() -> str:
        nc = await nats.connect(tiny_bus)
        try:
            store = await JobStore.open(nc, SUBJECTS)
            job = await store.submit("Hello there.", TtsParams(voice="英文男", format="wav"))
            async with asyncio.timeout(120):
                while (state := await store.get(job.task_id)) is None or state.status == "RUNNING":
                    await asyncio.sleep(0.2)
            assert state.status == "SUCCESS", state
            return job.task_id
        finally:
            await nc.close()

    return asyncio.run(make())


@pytest.fixture
async def audio_url() -> AsyncIterator[str]:
    """A local server with one second of the English clip, for audio_address."""
    clip = speech(0, 1000)

    async def serve(_: web.Request) -> web.Response:
        return web.Response(body=clip, content_type="audio/wav")

    app = web.Application()
    app.router.add_get("/speech.wav", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/speech.wav"
    await runner.cleanup()


async def get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def schemathesis(
    bridge: BridgeProcess,
    config: str,
    audio_url: str,
    languages: list[str],
    cwd: Path,
    task_id: str,
) -> tuple[int, str]:
    (cwd / "schemathesis.toml").write_text(config)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
        "FUNSPEECH_TEST_AUDIO_URL": audio_url,
        "FUNSPEECH_TEST_LANGUAGES": json.dumps(languages),
        "FUNSPEECH_TEST_ASYNC_TASK": task_id,
    }
    st = Path(sys.executable).parent / "st"
    args = ["--checks", "all", "--max-examples", "5", "--seed", SEED, "--workers", "1"]
    args += ["--generation-database", "none", "--request-timeout", "30", "--no-color"]
    proc = await asyncio.create_subprocess_exec(
        *(str(st), "--config-file", str(cwd / "schemathesis.toml"), "run"),
        *(f"{bridge.url}/openapi.json", *args),
        cwd=cwd,  # its replay cache (.schemathesis/) goes there, not into the repository
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(ST_TIMEOUT_S):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


@pytest.mark.timeout(ST_TIMEOUT_S + 60)
@pytest.mark.parametrize("auth", [False, True], ids=["auth-off", "auth-on"])
async def test_schemathesis_finds_no_mismatch(
    tiny_bus: str, finished_job: str, audio_url: str, tmp_path: Path, auth: bool
) -> None:
    env = {
        "DEBUG": "true",
        "ASR_ALLOW_PRIVATE_AUDIO_ADDRESS": "true",
        "TTS_ASYNC_ALLOW_PRIVATE_NOTIFY": "true",
    }
    if auth:
        env |= {"APPTOKEN": TOKEN, "APPKEY": APPKEY}
    bridge = BridgeProcess(tiny_bus, tmp_path, **env).start()
    try:
        spec = await get_json(f"{bridge.url}/openapi.json")
        asr = spec["paths"]["/stream/v1/asr"]["post"]
        schemes = spec["components"]["securitySchemes"]
        if auth:  # required exactly where the live settings require it
            assert asr["security"] == [{"nlsToken": [], "appkey": []}]
            assert set(schemes) == {"nlsToken", "appkey", "bearer"}
            assert "security" not in spec["paths"]["/health"]["get"]
        else:
            assert "security" not in asr and schemes == {}
        headers = {"X-NLS-Token": TOKEN} if auth else {}
        models = await get_json(f"{bridge.url}/stream/v1/asr/models", headers)
        languages = sorted({lang for m in models["models"] for lang in m["languages"]})
        config = WEBSOCKET_STATUSES + (AUTH if auth else "")
        rc, out = await schemathesis(bridge, config, audio_url, languages, tmp_path, finished_job)
    finally:
        bridge.stop()
    assert rc == 0 and "No issues found" in out, out[-12000:]
    selected = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", out)
    assert selected and len(set(selected.groups())) == 1, out[-3000:]  # every operation ran
