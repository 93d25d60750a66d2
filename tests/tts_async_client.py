"""A small client of /rest/v1/tts/async for the tests (aiohttp, as any NLS REST user) and the
checks every finished job must pass: the audio complete and in order."""

from __future__ import annotations

import asyncio
import io
import wave
from typing import Any

import aiohttp

from engines.tts.text import split_sentences

PATH = "/rest/v1/tts/async"


def sentences_text(count: int, start: int = 0) -> str:
    """Simple English the light engine's Piper voice reads fast; every sentence differs."""
    return " ".join(f"Sentence number {i} is read aloud here." for i in range(start, start + count))


def request(text: str, voice: str = "英文男", **options: Any) -> dict[str, Any]:
    tts = {"voice": voice, "text": text, "format": "wav", "sample_rate": 8000} | options
    return {"payload": {"tts_request": tts}, "context": {"device_id": "test"}}


async def submit(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> str:
    async with http.post(url + PATH, json=body) as r:
        answer = await r.json()
        assert r.status == 200 and answer["error_code"] == 20000000, answer
    return str(answer["data"]["task_id"])


async def poll(
    http: aiohttp.ClientSession, url: str, task_id: str, **query: str
) -> tuple[int, dict[str, Any]]:
    async with http.get(url + PATH, params={"task_id": task_id, **query}) as r:
        return r.status, await r.json()


async def finished(
    http: aiohttp.ClientSession, url: str, task_id: str, timeout: float, **query: str
) -> dict[str, Any]:
    """Poll (0.5 s apart) until the job is no longer RUNNING; its last answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status, answer = await poll(http, url, task_id, **query)
        assert status == 200, answer
        if answer["error_message"] != "RUNNING":
            return answer
        assert loop.time() < deadline, f"job {task_id} still RUNNING after {timeout:g} s"
        await asyncio.sleep(0.5)


async def download(http: aiohttp.ClientSession, address: str) -> tuple[int, str, bytes]:
    async with http.get(address) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


def wav_ms(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return w.getnframes() * 1000 / w.getframerate()


def check_complete(answer: dict[str, Any], text: str, audio_ms: float) -> None:
    """SUCCESS with every sentence of the text once, in order, inside the audio, and the
    audio as long as the job says (the sum of its parts)."""
    assert answer["error_code"] == 20000000 and answer["error_message"] == "SUCCESS", answer
    data = answer["data"]
    assert abs(audio_ms - data["duration_ms"]) <= 1, (audio_ms, data["duration_ms"])
    said = [s["text"] for s in data["sentences"]]
    assert said == split_sentences(text)  # none missing, none twice, in order
    last = 0
    for s in data["sentences"]:
        begin, end = int(s["begin_time"]), int(s["end_time"])
        assert last <= begin < end <= audio_ms + 1, (s, last, audio_ms)
        last = end
    assert last >= audio_ms - 2000  # the last sentence ends at the end (less its silence)
