"""NLS speech synthesis on the WebSocket gateway (`/ws/v1`, next to ASR: the first frame's
namespace picks; alias `/ws/v1/tts`), as the official SDKs speak it:

- SpeechSynthesizer / SpeechLongSynthesizer (`NlsSpeechSynthesizer`, `long_tts=True`):
  StartSynthesis carries the text -> binary audio as it is made, `MetaInfo` with subtitles per
  sentence when `enable_subtitle`, `SynthesisCompleted`, close.
- FlowingSpeechSynthesizer (stream-input TTS): StartSynthesis -> SynthesisStarted; RunSynthesis
  (any piece of text, a token is fine: the engine buffers it and speaks whole sentences) ->
  per sentence SentenceBegin, binary audio, SentenceSynthesis, SentenceEnd (subtitles with the
  sentence's times, word times with `enable_subtitle`); StopSynthesis -> the rest, then
  SynthesisCompleted and close.

Each task is a flowing bus session on one engine (bus.open_tts), so a client that goes away
stops the synthesis. One format header for a wav stream; TaskFailed (and close) on any error.
Idle: no text (flowing, before Stop) and no audio going out for ASR_IDLE_TIMEOUT -> 40000004;
the engine silent for TTS_STALL_TIMEOUT -> 50000000. Pings move neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import replace
from typing import Any

from aiohttp import WSMsgType, web

from bridge.auth import check_appkey
from bridge.errors import NlsError
from bridge.keys import BUS, ROUTES, SETTINGS
from bridge.nls_ws import NAMESPACES, Connection, invalid
from bridge.params import parse
from bridge.routes import RouteSpec, register
from bridge.tts_params import FlowingStart, RunSynthesis, SynthesizerStart, with_limit
from bridge.tts_service import Subtitles, check_text, failure, open_session, stalled
from bridge.watchdog import Deadline
from bus import codes, context
from bus.client import TtsMessage, TtsSession
from bus.schemas import TtsEvent

log = logging.getLogger("funspeech.bridge.tts")

SYNTHESIZER = "SpeechSynthesizer"
LONG = "SpeechLongSynthesizer"
FLOWING = "FlowingSpeechSynthesizer"
START, RUN, STOP = "StartSynthesis", "RunSynthesis", "StopSynthesis"
PUSH_CHARS = 8000  # text per bus message (a bus message stays far below 256 KiB)


class Synthesis:
    """One synthesis task on a client connection (the gateway's Connection)."""

    def __init__(self, conn: Connection, deadline: Deadline) -> None:
        self.conn = conn
        self.deadline = deadline
        self.settings = conn.settings
        self.session: TtsSession | None = None
        self.flowing = False
        self.stopped = False
        self.enable_subtitle = False
        self.session_id = ""
        self.subtitles = Subtitles()

    # ---- the connection
    async def serve(self, first: str) -> None:
        pump: asyncio.Task[None] | None = None
        try:
            await self.on_text(first)
            pump = asyncio.create_task(self.pump())
            await self.receive()
        finally:
            if pump is not None and not pump.done():
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
            if self.session is not None and not self.session.done:
                await self.session.abort()

    async def receive(self) -> None:
        conn = self.conn
        while not conn.closing:
            try:
                msg = await self.deadline.receive(conn.ws)
            except TimeoutError:
                raise self.timed_out() from None
            if msg.type == WSMsgType.TEXT:
                await self.on_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                raise invalid(f"Binary frames are not part of {conn.namespace}")
            else:  # close, closing, error
                conn.outcome = conn.outcome if conn.closing else "closed by the client"
                return

    def timed_out(self) -> NlsError:
        if self.flowing and not self.stopped:
            idle = self.settings.asr_idle_timeout
            return NlsError(codes.IDLE_TIMEOUT, f"Idle timeout: no text for {idle:g} s")
        return NlsError(codes.SERVER_ERROR, stalled(self.settings.tts_stall_timeout))

    # ---- frames from the client
    async def on_text(self, text: str) -> None:
        conn = self.conn
        try:
            message = json.loads(text)
            header = message["header"]
            namespace, name = header["namespace"], header["name"]
        except (ValueError, KeyError, TypeError):
            raise invalid(f"Message Not Json or without header: {text[:100]}") from None
        if self.session is None:
            conn.namespace = namespace
            conn.task_id = str(header.get("task_id") or uuid.uuid4().hex)
            context.bind(task_id=conn.task_id)  # on this session's log lines, and the engine's
        elif namespace != conn.namespace:
            raise invalid(f"Invalid namespace: {namespace}")
        payload = message.get("payload") or {}
        if not isinstance(payload, dict):
            raise invalid("payload must be a JSON object")
        names = (START, RUN, STOP) if namespace == FLOWING else (START,)
        if name not in names:
            raise invalid(f"Invalid message name: {name}")
        if name == START:
            await self.start(header, payload)
            return
        if self.session is None:
            raise invalid(f"{name} before {START}: connection not started")
        if header.get("task_id") != conn.task_id:
            raise invalid("Task ID not match")
        if self.stopped:
            raise invalid(f"{name} after {STOP}")
        if name == RUN:
            check_text(payload.get("text"), self.settings.tts_long_max_text_length, RUN)
            await self.push(parse(RunSynthesis, payload).text)
            self.deadline.reset(self.settings.asr_idle_timeout)
        else:
            self.stopped = True
            await self.session.stop()
            self.deadline.reset(self.settings.tts_stall_timeout)

    async def start(self, header: dict[str, Any], payload: dict[str, Any]) -> None:
        conn, settings = self.conn, self.settings
        if self.session is not None:
            raise invalid("Connection already started")
        check_appkey(settings, header.get("appkey"))
        self.flowing = conn.namespace == FLOWING
        text = ""
        if self.flowing:
            start = parse(FlowingStart, payload)
            self.session_id = start.session_id or ""
        else:
            long = conn.namespace == LONG
            limit = settings.tts_long_max_text_length if long else settings.tts_max_text_length
            check_text(payload.get("text"), limit, conn.namespace)
            start = parse(start_model(conn.namespace, limit), payload)
            text = start.text
            self.subtitles = Subtitles(text)
        self.enable_subtitle = start.enable_subtitle
        params = start.tts_params(enable_subtitle=start.enable_subtitle)
        bus = conn.request.app[BUS]
        self.session, first = await open_session(bus, params, settings)
        self.session_id = self.session_id or self.session.id
        log.debug(
            "task %s: %s on engine %s, %s, %d chars",
            *(conn.task_id, conn.namespace, self.session.engine_id, params, len(text)),
        )
        if self.flowing:
            await conn.send_event("SynthesisStarted", {"session_id": self.session_id, "index": 1})
            self.deadline.reset(settings.asr_idle_timeout)
        else:
            await self.push(text)
            self.stopped = True
            await self.session.stop()
            self.deadline.reset(settings.tts_stall_timeout)
        await self.forward(first)

    async def push(self, text: str) -> None:
        assert self.session is not None
        for at in range(0, len(text), PUSH_CHARS):
            await self.session.push(text[at : at + PUSH_CHARS])

    # ---- messages from the engine
    async def pump(self) -> None:
        """Forward the engine's audio and events until the task ends."""
        assert self.session is not None
        try:
            while not self.conn.closing:
                message = await self.session.next_message()
                await self.forward(message)
        except (ConnectionError, RuntimeError) as exc:  # the client went away
            self.conn.outcome = f"client gone ({exc})"
            await self.conn.close()

    async def forward(self, message: TtsMessage) -> None:
        conn, event = self.conn, message.event
        if message.kind == "audio":
            if not conn.ws.closed:
                await conn.ws.send_bytes(message.audio)
            self.progress()
            return
        assert event is not None
        self.progress()
        if message.kind == "error":
            await conn.fail(failure(event, conn.request.app[BUS]))
        elif message.kind == "sentence_begin" and self.flowing:
            await conn.send_event("SentenceBegin", {"session_id": self.session_id,
                                                    "index": event.index})  # fmt: skip
        elif message.kind == "sentence_end":
            await self.sentence_end(event)
        elif message.kind == "completed":
            await self.complete(event)

    def progress(self) -> None:
        """Audio or events going out keep the connection from being idle."""
        if self.stopped:
            self.deadline.reset(self.settings.tts_stall_timeout)
        else:
            self.deadline.reset(self.settings.asr_idle_timeout)

    async def sentence_end(self, event: TtsEvent) -> None:
        entries = self.subtitles.of(event)
        if not self.flowing:
            if self.enable_subtitle:
                await self.conn.send_event("MetaInfo", {"subtitles": entries})
            return
        words = entries[1:] or entries[:1]
        payload = {"session_id": self.session_id, "index": event.index}
        await self.conn.send_event("SentenceSynthesis", {**payload, "subtitles": words})
        await self.conn.send_event("SentenceEnd", {**payload, "subtitles": entries})

    async def complete(self, event: TtsEvent) -> None:
        conn = self.conn
        payload = {"session_id": self.session_id, "index": 1} if self.flowing else None
        await conn.send_event("SynthesisCompleted", payload)
        conn.outcome = "completed"
        conn.audio_ms = event.duration_ms
        await conn.close()


def start_model(namespace: str, limit: int) -> type[SynthesizerStart]:
    name = "LongSynthesizerStart" if namespace == LONG else "SynthesizerStart"
    return with_limit(SynthesizerStart, limit, name)  # type: ignore[return-value]


async def serve(conn: Connection, first: str, deadline: Deadline) -> None:
    await Synthesis(conn, deadline).serve(first)


def specs(app: web.Application) -> list[RouteSpec]:
    """/ws/v1/tts (the gateway's handler: every namespace works on every path), and the TTS
    frames and namespaces added to the gateway's /ws/v1."""
    settings = app[SETTINGS]
    frames = (
        start_model(SYNTHESIZER, settings.tts_max_text_length),
        start_model(LONG, settings.tts_long_max_text_length),
        FlowingStart,
        RunSynthesis,
    )
    about = (
        " TTS namespaces: SpeechSynthesizer and SpeechLongSynthesizer (StartSynthesis with the "
        "text: the SynthesizerStart / LongSynthesizerStart schemas), FlowingSpeechSynthesizer "
        "(StartSynthesis: FlowingStart, RunSynthesis, StopSynthesis); binary frames from the "
        "server carry the audio. See docs/tts.md."
    )
    gateway = next(s for s in app[ROUTES] if s.path == "/ws/v1")
    app[ROUTES].remove(gateway)
    app[ROUTES].append(
        replace(gateway, description=gateway.description + about, frames=gateway.frames + frames)
    )
    tts = replace(
        gateway,
        path="/ws/v1/tts",
        summary="NLS speech synthesis: SpeechSynthesizer, SpeechLongSynthesizer, "
        "FlowingSpeechSynthesizer (WebSocket; the ASR namespaces work here too)",
        description="A WebSocket as /ws/v1: JSON text frames with header/payload, binary "
        "frames of audio from the server." + about,
        frames=frames,
    )
    return [tts]


def setup(app: web.Application) -> None:
    """After nls_ws.setup: TTS namespaces on the gateway, and the alias /ws/v1/tts."""
    app[NAMESPACES] = {SYNTHESIZER: serve, LONG: serve, FLOWING: serve}
    register(app, specs(app))
