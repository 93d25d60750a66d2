"""The NLS WebSocket gateway (`/ws/v1`, alias `/ws/v1/asr`): SpeechTranscriber and
SpeechRecognizer sessions translated to bus sessions. One task per connection; every
TaskFailed and every Completed closes the connection. Other modules serve more namespaces on
the same connections (`NAMESPACES`: the TTS ones, bridge/tts_ws.py): the first frame's
namespace picks the handler."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from bridge.asr_service import open_session
from bridge.auth import check_appkey, check_token
from bridge.errors import NlsError, task_failed
from bridge.keys import BUS, LIVE, SETTINGS
from bridge.lifecycle import SHUTTING_DOWN
from bridge.params import RecognizerStart, TranscriberControl, TranscriberStart, parse
from bridge.routes import Answer, RouteSpec, register
from bridge.watchdog import Deadline
from bridge.wav_stream import WavStripper
from bus import codes, context
from bus.client import AsrSession
from bus.schemas import AsrEvent, AsrParams
from bus.text import join_texts
from funspeech.settings import Settings

log = logging.getLogger("funspeech.bridge.ws")

TRANSCRIBER = "SpeechTranscriber"
RECOGNIZER = "SpeechRecognizer"
DIRECTIVES = {
    TRANSCRIBER: {
        "start": "StartTranscription",
        "stop": "StopTranscription",
        "control": "ControlTranscriber",
    },
    RECOGNIZER: {"start": "StartRecognition", "stop": "StopRecognition"},
}
STARTS = {TRANSCRIBER: TranscriberStart, RECOGNIZER: RecognizerStart}
STARTED = {TRANSCRIBER: "TranscriptionStarted", RECOGNIZER: "RecognitionStarted"}
COMPLETED = {TRANSCRIBER: "TranscriptionCompleted", RECOGNIZER: "RecognitionCompleted"}
HEARTBEAT_S = 30.0  # server pings; a client that stops answering is closed
MAX_FRAME = 16 * 1024 * 1024
AUTH_ECHO_S = 2.0  # a refused client: wait this long for its first frame to echo its task_id


# (connection, first frame, idle deadline): serves the connection to its end
NamespaceHandler = Callable[["Connection", str, Deadline], Awaitable[None]]
NAMESPACES = web.AppKey("ws_namespaces", dict[str, NamespaceHandler])


def invalid(message: str) -> NlsError:
    return NlsError(codes.INVALID_MESSAGE, message)


class Connection:
    """One client WebSocket and, once started, its bus session."""

    def __init__(self, ws: web.WebSocketResponse, settings: Settings, request: web.Request) -> None:
        self.ws = ws
        self.settings = settings
        self.request = request
        self.namespace = "Default"
        self.task_id = ""
        self.session: AsrSession | None = None
        self.params = AsrParams()
        self.rate = 16000
        self.wav = WavStripper()
        self.stopped = False
        self.closing = False
        self.recognized: list[str] = []  # SpeechRecognizer: finished sentences so far
        self.pump_task: asyncio.Task[None] | None = None
        self.audio_bytes = 0
        self.audio_ms: int | None = None  # other namespaces: audio made (TTS), for the log
        self.opened = time.monotonic()
        self.outcome = "closed by the client"

    # ---- frames to the client
    async def send_event(self, name: str, payload: dict[str, Any] | None = None) -> None:
        header = {
            "message_id": uuid.uuid4().hex,
            "task_id": self.task_id,
            "namespace": self.namespace,
            "name": name,
            "status": codes.SUCCESS,
            "status_text": "Gateway:SUCCESS:Success.",
            "status_message": "GATEWAY|SUCCESS|Success.",
        }
        frame: dict[str, Any] = {"header": header}
        if payload is not None:
            frame["payload"] = payload
        if not self.ws.closed:
            await self.ws.send_str(json.dumps(frame, ensure_ascii=False))

    async def fail(self, exc: NlsError, close_code: int = WSCloseCode.OK) -> None:
        if self.closing:
            return
        self.outcome = f"failed {exc.code} {exc.message}"
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(task_failed(exc, self.task_id, self.namespace))
        await self.close(close_code)

    async def going_away(self) -> None:
        """The drain is over: TaskFailed, then close with GOING_AWAY."""
        await self.fail(NlsError(codes.SERVER_ERROR, SHUTTING_DOWN), WSCloseCode.GOING_AWAY)

    async def close(self, code: int = WSCloseCode.OK) -> None:
        self.closing = True
        if self.session is not None and not self.session.done:
            await self.session.abort()
        if not self.ws.closed:
            await self.ws.close(code=code)

    async def refuse(self, exc: NlsError) -> None:
        """Auth failed: wait briefly for the first frame, so the TaskFailed carries the
        client's task_id and namespace, then fail."""
        with contextlib.suppress(TimeoutError):
            msg = await Deadline(AUTH_ECHO_S).receive(self.ws)
            if msg.type == WSMsgType.TEXT:
                with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                    header = json.loads(msg.data)["header"]
                    known = {*DIRECTIVES, *self.request.app.get(NAMESPACES, {})}
                    if header.get("namespace") in known:
                        self.namespace = header["namespace"]
                    self.task_id = str(header.get("task_id") or "")
        await self.fail(exc)

    # ---- frames from the client
    async def on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
            header = message["header"]
            namespace, name = header["namespace"], header["name"]
        except (ValueError, KeyError, TypeError):
            raise invalid(f"Message Not Json or without header: {text[:100]}") from None
        if self.session is None:
            if namespace not in DIRECTIVES:
                raise invalid(f"Invalid namespace: {namespace}")
            self.namespace = namespace
            self.task_id = str(header.get("task_id") or uuid.uuid4().hex)
            context.bind(task_id=self.task_id)  # on this connection's log lines, and the engine's
        elif namespace != self.namespace:
            raise invalid(f"Invalid namespace: {namespace}")
        directives = DIRECTIVES[self.namespace]
        if name not in directives.values():
            raise invalid(f"Invalid message name: {name}")
        payload = message.get("payload") or {}
        if not isinstance(payload, dict):
            raise invalid("payload must be a JSON object")
        if name == directives["start"]:
            await self.start(header, payload)
            return
        if self.session is None:
            raise invalid(f"{name} before {directives['start']}: connection not started")
        if header.get("task_id") != self.task_id:
            raise invalid("Task ID not match")
        if name == directives["stop"]:
            self.stopped = True
            log.debug("task %s: stop after %.1f s of audio", self.task_id, self.audio_s)
            await self.session.stop()
        else:  # ControlTranscriber
            self.params = parse(TranscriberControl, payload).applied_to(self.params)
            log.debug("task %s: control %s", self.task_id, payload)
            await self.session.control(self.params)

    async def start(self, header: dict[str, Any], payload: dict[str, Any]) -> None:
        if self.session is not None:
            raise invalid("Connection already started")
        check_appkey(self.settings, header.get("appkey"))
        start = parse(STARTS[self.namespace], payload)
        self.params, self.rate = start.asr_params(), start.sample_rate
        self.wav = WavStripper() if start.format == "wav" else WavStripper(sniff_only=True)
        bus = self.request.app[BUS]
        self.session = await open_session(bus, self.params, self.rate, self.settings)
        log.debug(
            "task %s: %s on engine %s, %d Hz %s, %s",
            *(self.task_id, self.namespace, self.session.engine_id),
            *(self.rate, start.format, self.params),
        )
        await self.send_event(STARTED[self.namespace], {"session_id": self.session.id})

    async def on_audio(self, data: bytes) -> None:
        if self.session is None:
            raise invalid("Audio before start: connection not started")
        if self.stopped:
            return  # audio after stop is ignored, as NLS does
        pcm = self.wav.feed(data)
        if pcm:
            self.audio_bytes += len(pcm)
            await self.session.send(pcm)

    @property
    def audio_s(self) -> float:
        if self.audio_ms is not None:
            return self.audio_ms / 1000
        return self.audio_bytes / 2 / self.rate

    def log_end(self) -> None:
        """The session's one INFO line."""
        took = time.monotonic() - self.opened
        log.info(
            "task %s %s: %s after %.1f s, %.1f s of audio",
            *(self.task_id or "-", self.namespace, self.outcome, took, self.audio_s),
        )

    # ---- events from the engine
    async def pump(self) -> None:
        """Forward bus events as NLS frames until the session ends."""
        try:
            await self._pump()
        except (ConnectionError, RuntimeError) as exc:  # the client went away
            self.outcome = f"client gone ({exc})"
            await self.close()

    async def _pump(self) -> None:
        assert self.session is not None
        recognizer = self.namespace == RECOGNIZER
        async for event in self.session:
            if event.type == "error":
                await self.fail(NlsError(event.code, event.message))
                return
            if event.type == "completed":
                await self.complete()
                return
            if recognizer:
                if await self._recognizer_event(event):
                    return
            else:
                await self._transcriber_event(event)

    async def complete(self) -> None:
        result = {"result": join_texts(self.recognized)} if self.namespace == RECOGNIZER else None
        await self.send_event(COMPLETED[self.namespace], result)
        self.outcome = "completed"
        await self.close()

    async def _transcriber_event(self, event: AsrEvent) -> None:
        if event.type == "begin":
            await self.send_event("SentenceBegin", {"index": event.index, "time": event.begin_ms})
        elif event.type == "partial":
            payload = {"index": event.index, "time": event.time_ms, "result": event.text}
            await self.send_event("TranscriptionResultChanged", payload)
        elif event.type == "end":
            payload = {
                "index": event.index,
                "time": event.time_ms,
                "begin_time": event.begin_ms,
                "result": event.text,
                "confidence": event.confidence if event.confidence is not None else 0.0,
            }
            if self.params.enable_words:
                payload["words"] = [
                    {"text": w.text, "startTime": w.begin_ms, "endTime": w.end_ms}
                    for w in event.words or []
                ]
            await self.send_event("SentenceEnd", payload)

    async def _recognizer_event(self, event: AsrEvent) -> bool:
        """True when the recognition is complete (voice detection ended it)."""
        if event.type == "partial":
            text = join_texts([*self.recognized, event.text])
            await self.send_event("RecognitionResultChanged", {"result": text})
        elif event.type == "end":
            self.recognized.append(event.text)
            if self.params.single_sentence:
                await self.complete()
                return True
        return False


async def handle(request: web.Request) -> web.WebSocketResponse:
    settings = request.app[SETTINGS]
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_FRAME)
    await ws.prepare(request)
    conn = Connection(ws, settings, request)
    request.app[LIVE].sessions.add(conn)
    try:
        token = request.headers.get("X-NLS-Token") or request.query.get("token")
        try:
            check_token(settings, token, "X-NLS-Token header or token query parameter")
        except NlsError as exc:
            await conn.refuse(exc)
        else:
            await serve(conn, settings)
    except NlsError as exc:
        await conn.fail(exc)
    except Exception as exc:  # e.g. the bus connection is down: say so, don't hang
        log.exception("task %s: internal error", conn.task_id or "-")
        await conn.fail(NlsError(codes.SERVER_ERROR, f"Internal error: {type(exc).__name__}"))
    finally:
        await conn.close()
        if conn.pump_task is not None and not conn.pump_task.done():
            conn.pump_task.cancel()
        request.app[LIVE].sessions.discard(conn)
        conn.log_end()
    return ws


async def serve(conn: Connection, settings: Settings) -> None:
    """Read client frames until the connection ends. Idle: no audio for ASR_IDLE_TIMEOUT s
    (pings don't count) before stop; after stop the result must come within
    ASR_RESULT_TIMEOUT s. Raises NlsError for the client."""
    idle = settings.asr_idle_timeout
    deadline = Deadline(idle)
    while not conn.closing:
        try:
            msg = await deadline.receive(conn.ws)
        except TimeoutError:
            if conn.stopped:
                raise NlsError(codes.SERVER_ERROR, "No final result in time") from None
            raise NlsError(codes.IDLE_TIMEOUT, f"Idle timeout: no audio for {idle:g} s") from None
        if msg.type == WSMsgType.BINARY:
            await conn.on_audio(msg.data)
            if not conn.stopped:
                deadline.reset(idle)
        elif msg.type == WSMsgType.TEXT:
            if conn.session is None and (other := _delegate(conn, msg.data)) is not None:
                await other(conn, msg.data, deadline)
                return
            started, stopped = conn.session is not None, conn.stopped
            await conn.on_text(msg.data)
            if conn.stopped and not stopped:
                deadline.reset(settings.asr_result_timeout)
            elif not started and conn.session is not None:
                deadline.reset(idle)
                conn.pump_task = asyncio.create_task(conn.pump())
        else:  # close, closing, error
            return


def _delegate(conn: Connection, text: str) -> NamespaceHandler | None:
    """The handler of another module for the namespace of this (first) frame, if any."""
    handlers = conn.request.app.get(NAMESPACES)
    if not handlers:
        return None
    try:
        namespace = json.loads(text)["header"]["namespace"]
    except (ValueError, KeyError, TypeError):
        return None
    return handlers.get(namespace) if isinstance(namespace, str) else None


def _spec(path: str, summary: str) -> RouteSpec:
    return RouteSpec(
        "GET",
        path,
        handle,
        summary,
        "A WebSocket: JSON text frames with header/payload (StartTranscription, "
        "StopTranscription, ControlTranscriber; StartRecognition, StopRecognition; payloads: "
        "the TranscriberStart, RecognizerStart and TranscriberControl schemas), binary frames "
        "of audio. With APPTOKEN set the token comes in the X-NLS-Token header or the `token` "
        "query parameter; a refused token is a TaskFailed frame (40000001) after the upgrade. "
        "See docs/nls-websocket.md.",
        headers={
            "Upgrade": {"schema": {"type": "string", "enum": ["websocket"]}},
            "Connection": {"schema": {"type": "string", "enum": ["Upgrade"]}},
            "Sec-WebSocket-Version": {"schema": {"type": "string", "enum": ["13"]}},
            "Sec-WebSocket-Key": {
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9+/]{21}[AQgw]==$"},
                "description": "16 random bytes, base64",
            },
        },
        query_extra={
            "token": {"schema": {"type": "string"}, "description": "Token (or X-NLS-Token)"}
        },
        frames=(TranscriberStart, RecognizerStart, TranscriberControl),
        answers={
            101: Answer("Switching Protocols: the NLS session runs on the WebSocket"),
            400: Answer("Not a WebSocket handshake", {"text/plain": {"type": "string"}}),
        },
        tags=("NLS",),
    )


SPECS = [
    _spec("/ws/v1", "NLS realtime gateway, every namespace (WebSocket)"),
    _spec("/ws/v1/asr", "NLS SpeechTranscriber / SpeechRecognizer (WebSocket)"),
]


def setup(app: web.Application) -> None:
    register(app, SPECS)
