"""Bridge logs (issue 14 item 9): the HTTP access log (ACCESS_LOG, off by default, secrets
masked) and one INFO line per finished WebSocket session. Real bridge processes."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path

import aiohttp

from tests.conftest import BridgeProcess

TOKEN = "logs-secret-token-0123"


async def log_matching(proc: BridgeProcess, pattern: str, timeout: float = 5.0) -> str:
    """The first log line matching `pattern`, waiting for the process to write it."""
    async with asyncio.timeout(timeout):
        while True:
            for line in proc.log_path.read_text(errors="replace").splitlines():
                if re.search(pattern, line):
                    return line
            await asyncio.sleep(0.05)


async def failed_session(proc: BridgeProcess, task_id: str, query: str = "") -> None:
    header = {"message_id": uuid.uuid4().hex, "task_id": task_id, "name": "StartTranscription"}
    header |= {"namespace": "SpeechTranscriber", "appkey": "k"}
    start = json.dumps({"header": header, "payload": {"sample_rate": 44100}})
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(proc.ws_url + "/ws/v1" + query) as ws,
    ):
        await ws.send_str(start)
        async with asyncio.timeout(10):
            async for _ in ws:
                pass


async def test_access_log_and_session_line(nats_url: str, tmp_path: Path) -> None:
    proc = BridgeProcess(
        nats_url, tmp_path, ACCESS_LOG="true", APPTOKEN=TOKEN, HEALTH_TASKS=""
    ).start()
    try:
        probe = {"User-Agent": "probe/1"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{proc.url}/health", headers=probe) as r,
        ):
            assert r.status == 200
        line = await log_matching(proc, r"funspeech\.bridge\.access .*GET /health")
        assert '"GET /health HTTP/1.1" 200' in line and '"probe/1"' in line, line
        task_id = uuid.uuid4().hex
        await failed_session(proc, task_id, f"?token={TOKEN}&appkey=k")
        line = await log_matching(proc, r"funspeech\.bridge\.access .*GET /ws/v1")
        assert "token=***" in line and TOKEN not in line and " 101 " in line, line
        line = await log_matching(proc, rf"task {task_id} SpeechTranscriber: ")
        assert "failed 41010101" in line and re.search(r"after \d+\.\d s", line), line
    finally:
        proc.stop()
    assert TOKEN not in proc.log_path.read_text()


async def test_no_access_log_by_default(bridge: BridgeProcess) -> None:
    task_id = uuid.uuid4().hex
    await failed_session(bridge, task_id)
    await log_matching(bridge, rf"task {task_id} SpeechTranscriber: failed")
    assert "funspeech.bridge.access" not in bridge.log_path.read_text()
