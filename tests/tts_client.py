"""Test helpers for speech synthesis through the bridge: the official NLS SDK's synthesizer, raw
FlowingSpeechSynthesizer frames, and reading back what the service sent (PyAV for containers,
so streamed files without a length decode as a player reads them)."""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading
import time
import uuid
import wave
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import nls
import numpy as np

from tests.harness import DATA, nls_frame

FLOWING = "FlowingSpeechSynthesizer"
FOX = json.loads((DATA / "clips.json").read_text())[0]["text"]  # what en_fox.wav says
SAMPLE_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)


@dataclass
class Audio:
    samples: int
    rate: int
    peak: float  # of float samples in [-1, 1]

    @property
    def seconds(self) -> float:
        return self.samples / self.rate


def decode(data: bytes, fmt: str, rate: int = 16000) -> Audio:
    """What a client gets: raw PCM at `rate`, or a container decoded as a stream."""
    if fmt == "pcm":
        pcm = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")
        return Audio(pcm.size, rate, float(np.abs(pcm).max(initial=0)) / 32768)
    samples, peak = 0, 0.0
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        out_rate = stream.codec_context.sample_rate or stream.rate
        for frame in container.decode(stream):
            x = frame.to_ndarray()
            samples += frame.samples
            if x.dtype.kind == "i":
                x = x / float(np.iinfo(x.dtype).max)
            peak = max(peak, float(np.abs(x).max(initial=0)))
    return Audio(samples, int(out_rate), peak)


def container_rate(data: bytes, fmt: str) -> int:
    """The rate a container says it holds (Ogg Opus keeps the input rate in its header;
    decoders output 48 kHz)."""
    if fmt == "wav":
        with wave.open(io.BytesIO(data[:44] + b"\0" * 4)) as w:
            return w.getframerate()
    if fmt == "opus":
        head = data.find(b"OpusHead")
        return int.from_bytes(data[head + 12 : head + 16], "little")
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        return int(stream.codec_context.sample_rate or stream.rate)


def fits_text(seconds: float, text: str) -> bool:
    """A duration a voice can take to say `text` (CJK ~2-8 characters a second, Latin
    letters ~8-35)."""
    cjk = sum(1 for c in text if ord(c) >= 0x2E80)
    latin = sum(1 for c in text if c.isalpha() and ord(c) < 0x2E80)
    low, high = cjk / 8 + latin / 35, cjk / 2 + latin / 8 + 0.5
    return low <= seconds <= high


def check_subtitles(
    entries: list[dict[str, Any]], duration_ms: float, text: str | None = None
) -> None:
    """Sentence entries in order, words inside their sentence, all inside the audio;
    indices point at the text (`text`: the whole request's, else each sentence's)."""
    last_end = 0
    sentence: dict[str, Any] | None = None
    for e in entries:
        assert set(e) >= {"text", "begin_time", "end_time", "begin_index", "end_index",
                          "sentence"}, e  # fmt: skip
        assert 0 <= e["begin_time"] <= e["end_time"] <= duration_ms + 50, (e, duration_ms)
        assert 0 <= e["begin_index"] <= e["end_index"], e
        if e["sentence"]:
            assert e["begin_time"] >= last_end - 1, (e, last_end)
            last_end, sentence = e["end_time"], e
            if text is not None:
                assert text[e["begin_index"] : e["end_index"]] == e["text"], (e, text)
        else:
            assert sentence is not None, "a word before its sentence"
            assert sentence["begin_time"] - 1 <= e["begin_time"], (e, sentence)
            assert e["end_time"] <= sentence["end_time"] + 50, (e, sentence)
            assert sentence["begin_index"] <= e["begin_index"] <= e["end_index"], (e, sentence)
            assert e["end_index"] <= sentence["end_index"], (e, sentence)


# ---------------------------------------------------------------- the official SDK


@dataclass
class SynthRun:
    """What an NlsSpeechSynthesizer client received: events (name, payload, header) in order
    and the audio bytes."""

    events: list[tuple[str, dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    frames: int = 0
    closed: threading.Event = field(default_factory=threading.Event)

    def on_event(self, message: str, *args: object) -> None:
        data = json.loads(message)
        header = data["header"]
        self.events.append((header["name"], data.get("payload") or {}, header))

    def on_data(self, data: bytes, *args: object) -> None:
        self.audio += data
        self.frames += 1

    def on_close(self, *args: object) -> None:
        self.closed.set()

    def names(self) -> list[str]:
        return [n for n, _, _ in self.events]

    def failure(self) -> dict[str, Any] | None:
        return next((h for n, _, h in self.events if n == "TaskFailed"), None)

    def subtitles(self) -> list[dict[str, Any]]:
        return [s for n, p, _ in self.events if n == "MetaInfo" for s in p["subtitles"]]


def sdk_synthesize(
    url: str,
    text: str,
    *,
    long_tts: bool = False,
    token: str = "test-token-123",
    appkey: str = "test-appkey",
    completed_timeout: int = 120,
    **start: Any,
) -> SynthRun:
    """One synthesis with the official SDK (blocks until SynthesisCompleted or TaskFailed)."""
    run = SynthRun()
    synth = nls.NlsSpeechSynthesizer(
        url=url,
        token=token,
        appkey=appkey,
        long_tts=long_tts,
        on_metainfo=run.on_event,
        on_data=run.on_data,
        on_completed=run.on_event,
        on_error=run.on_event,
        on_close=run.on_close,
    )
    synth.start(text, completed_timeout=completed_timeout, **start)
    run.closed.wait(10)
    return run


# ---------------------------------------------------------------- raw FlowingSpeechSynthesizer


@dataclass
class FlowRun:
    """A FlowingSpeechSynthesizer task as raw frames: events and binary frames in order."""

    task_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    order: list[str] = field(default_factory=list)  # event names, "audio" for binary frames
    events: list[tuple[str, dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)

    def add(self, msg: aiohttp.WSMessage) -> str | None:
        if msg.type == aiohttp.WSMsgType.BINARY:
            self.audio += msg.data
            self.order.append("audio")
            return "audio"
        if msg.type != aiohttp.WSMsgType.TEXT:
            return None
        data = json.loads(msg.data)
        name = data["header"]["name"]
        self.events.append((name, data.get("payload") or {}, data["header"]))
        self.order.append(name)
        return name

    def names(self) -> list[str]:
        return [n for n, _, _ in self.events]

    def payloads(self, name: str) -> list[dict[str, Any]]:
        return [p for n, p, _ in self.events if n == name]

    def failure(self) -> dict[str, Any] | None:
        return next((h for n, _, h in self.events if n == "TaskFailed"), None)

    def frame(self, name: str, payload: dict[str, Any] | None = None) -> str:
        return nls_frame(name, self.task_id, payload, namespace=FLOWING)


async def read_until_closed(ws: aiohttp.ClientWebSocketResponse, run: FlowRun) -> None:
    async for msg in ws:
        run.add(msg)


async def flowing(
    url: str,
    pieces: list[str],
    start: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 120,
) -> FlowRun:
    """Start, RunSynthesis for each piece (token by token if you like), Stop; every event
    and audio frame until the server closes."""
    run = FlowRun()
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=headers) as ws:
        await ws.send_str(run.frame("StartSynthesis", start))
        while run.add(await ws.receive(timeout=30)) not in ("SynthesisStarted", "TaskFailed"):
            pass
        if run.failure() is None:
            for piece in pieces:
                await ws.send_str(run.frame("RunSynthesis", {"text": piece}))
            await ws.send_str(run.frame("StopSynthesis"))
        async with asyncio.timeout(timeout):
            await read_until_closed(ws, run)
    return run


# ---------------------------------------------------------------- HTTP


async def request(
    method: str, url: str, **kw: Any
) -> tuple[int, dict[str, str], bytes, list[float]]:
    """Status, headers, body and the arrival time of each chunk (s from the request)."""
    began = time.monotonic()
    times: list[float] = []
    body = bytearray()
    async with aiohttp.ClientSession() as http, http.request(method, url, **kw) as r:
        async for chunk in r.content.iter_any():
            times.append(time.monotonic() - began)
            body += chunk
        return r.status, dict(r.headers), bytes(body), times


def envelope(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    data = json.loads(body)
    assert set(data) == {"task_id", "result", "status", "message"}, data
    assert headers["task_id"] == data["task_id"] and re.fullmatch(r"[0-9a-f]{32}", data["task_id"])
    assert headers["Content-Type"].startswith("application/json")
    return data


async def create_voice(url: str, name: str, audio: bytes, **fields: str) -> tuple[int, Any]:
    form = aiohttp.FormData()
    form.add_field("name", name)
    for key, value in fields.items():
        form.add_field(key, value)
    form.add_field("audio", audio, filename="prompt.wav", content_type="audio/wav")
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/stream/v1/tts/voices", data=form) as r,
    ):
        return r.status, await r.json()


async def get_json(url: str, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, **kw) as r:
        return r.status, await r.json()
