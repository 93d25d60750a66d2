"""The NLS WebSocket gateway (`/ws/v1`, alias `/ws/v1/asr`): SpeechTranscriber and
SpeechRecognizer sessions translated to bus sessions. One task per connection; every
TaskFailed and every Completed closes the connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from bridge.app import BUS, SETTINGS
from bridge.auth import AuthError, check_appkey, check_token
from bridge.wav_stream import WavStripper
from bus import codes
from bus.client import AsrSession, BusError
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
STARTED = {TRANSCRIBER: "TranscriptionStarted", RECOGNIZER: "RecognitionStarted"}
COMPLETED = {TRANSCRIBER: "TranscriptionCompleted", RECOGNIZER: "RecognitionCompleted"}
SUPPORTED_FORMATS = ("pcm", "wav")
SUPPORTED_RATES = (8000, 16000)
HEARTBEAT_S = 30.0  # server pings; a client that stops answering is closed
MAX_FRAME = 16 * 1024 * 1024


class Failed(Exception):
    """Ends the connection with a TaskFailed frame."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _bool(payload: dict[str, Any], key: str, default: bool) -> bool:
    value = payload.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise Failed(codes.INVALID_PARAMETER, f"Invalid parameter {key}: {value!r} is not a boolean")


def params_from(namespace: str, payload: dict[str, Any]) -> tuple[AsrParams, str, int]:
    """Start payload -> (params, format, sample_rate); unknown keys are ignored, as NLS does."""
    fmt = str(payload.get("format", "pcm")).lower()
    if fmt not in SUPPORTED_FORMATS:
        raise Failed(codes.INVALID_PARAMETER, f"Unsupported format '{fmt}': use pcm or wav")
    try:
        rate = int(payload.get("sample_rate", 16000))
    except (TypeError, ValueError):
        raise Failed(codes.UNSUPPORTED_SAMPLE_RATE, "Invalid sample_rate") from None
    if rate not in SUPPORTED_RATES:
        raise Failed(
            codes.UNSUPPORTED_SAMPLE_RATE, f"Unsupported sample_rate {rate}: use 8000 or 16000"
        )
    silence_key = "max_sentence_silence" if namespace == TRANSCRIBER else "max_end_silence"
    try:
        silence = int(payload.get(silence_key, 800))
    except (TypeError, ValueError):
        raise Failed(codes.INVALID_PARAMETER, f"Invalid {silence_key}") from None
    if not 200 <= silence <= 6000:
        raise Failed(codes.INVALID_PARAMETER, f"{silence_key} must be within 200..6000 ms")
    hotwords = payload.get("hotwords") or []
    if isinstance(hotwords, str):
        hotwords = [w for w in hotwords.replace(",", " ").split() if w]
    params = AsrParams(
        model=payload.get("customization_id") or payload.get("model") or None,
        language=payload.get("language") or None,
        max_sentence_silence_ms=silence,
        enable_intermediate_result=_bool(payload, "enable_intermediate_result", False),
        enable_punctuation=_bool(payload, "enable_punctuation_prediction", False),
        enable_itn=_bool(payload, "enable_inverse_text_normalization", False),
        enable_words=_bool(payload, "enable_words", False),
        hotwords=list(hotwords),
        single_sentence=namespace == RECOGNIZER and _bool(payload, "enable_voice_detection", False),
    )
    return params, fmt, rate


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
        self.wav = WavStripper()
        self.stopped = False
        self.closing = False
        self.recognized: list[str] = []  # SpeechRecognizer: finished sentences so far
        self.pump_task: asyncio.Task[None] | None = None

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

    async def fail(self, code: int, message: str) -> None:
        header = {
            "message_id": uuid.uuid4().hex,
            "task_id": self.task_id,
            "namespace": self.namespace,
            "name": "TaskFailed",
            "status": code,
            "status_text": message,
            "status_message": message,
        }
        log.info("task %s failed: %d %s", self.task_id or "-", code, message)
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.ws.send_str(json.dumps({"header": header}, ensure_ascii=False))
        await self.close()

    async def close(self) -> None:
        self.closing = True
        if self.session is not None and not self.session.done:
            await self.session.abort()
        if not self.ws.closed:
            await self.ws.close()

    # ---- frames from the client
    async def on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
            header = message["header"]
            namespace, name = header["namespace"], header["name"]
        except (ValueError, KeyError, TypeError):
            raise Failed(
                codes.INVALID_MESSAGE, f"Message Not Json or without header: {text[:100]}"
            ) from None
        if self.session is None:
            if namespace not in DIRECTIVES:
                raise Failed(codes.INVALID_MESSAGE, f"Invalid namespace: {namespace}")
            self.namespace = namespace
            self.task_id = str(header.get("task_id") or uuid.uuid4().hex)
        elif namespace != self.namespace:
            raise Failed(codes.INVALID_MESSAGE, f"Invalid namespace: {namespace}")
        directives = DIRECTIVES[self.namespace]
        if name not in directives.values():
            raise Failed(codes.INVALID_MESSAGE, f"Invalid message name: {name}")
        payload = message.get("payload") or {}
        if not isinstance(payload, dict):
            raise Failed(codes.INVALID_MESSAGE, "payload must be a JSON object")
        if name == directives["start"]:
            await self.start(header, payload)
            return
        if self.session is None:
            raise Failed(
                codes.INVALID_MESSAGE,
                f"{name} before {directives['start']}: connection not started",
            )
        if header.get("task_id") != self.task_id:
            raise Failed(codes.INVALID_MESSAGE, "Task ID not match")
        if name == directives["stop"]:
            self.stopped = True
            await self.session.stop()
        else:  # ControlTranscriber
            self.params = self._merged(payload)
            await self.session.control(self.params)

    def _merged(self, payload: dict[str, Any]) -> AsrParams:
        update: dict[str, Any] = {}
        if "max_sentence_silence" in payload:
            value = payload["max_sentence_silence"]
            if not isinstance(value, int) or not 200 <= value <= 6000:
                raise Failed(
                    codes.INVALID_PARAMETER, "max_sentence_silence must be within 200..6000 ms"
                )
            update["max_sentence_silence_ms"] = value
        for key, field in (
            ("enable_intermediate_result", "enable_intermediate_result"),
            ("enable_punctuation_prediction", "enable_punctuation"),
            ("enable_inverse_text_normalization", "enable_itn"),
            ("enable_words", "enable_words"),
        ):
            if key in payload:
                update[field] = _bool(payload, key, False)
        return self.params.model_copy(update=update)

    async def start(self, header: dict[str, Any], payload: dict[str, Any]) -> None:
        if self.session is not None:
            raise Failed(codes.INVALID_MESSAGE, "Connection already started")
        check_appkey(self.settings, header.get("appkey"))
        self.params, fmt, rate = params_from(self.namespace, payload)
        self.wav = WavStripper() if fmt == "wav" else WavStripper(sniff_only=True)
        bus = self.request.app[BUS]
        try:
            self.session = await bus.open_asr(
                self.params, sample_rate=rate, timeout=self.settings.asr_open_timeout
            )
        except BusError as exc:
            raise Failed(exc.code, exc.message) from None
        payload_out = {"session_id": self.session.id}
        await self.send_event(STARTED[self.namespace], payload_out)

    async def on_audio(self, data: bytes) -> None:
        if self.session is None:
            raise Failed(codes.INVALID_MESSAGE, "Audio before start: connection not started")
        if self.stopped:
            return  # audio after stop is ignored, as NLS does
        pcm = self.wav.feed(data)
        if pcm:
            await self.session.send(pcm)

    # ---- events from the engine
    async def pump(self) -> None:
        """Forward bus events as NLS frames until the session ends."""
        try:
            await self._pump()
        except (ConnectionError, RuntimeError) as exc:  # the client went away
            log.info("task %s: client gone (%s)", self.task_id, exc)
            await self.close()

    async def _pump(self) -> None:
        assert self.session is not None
        recognizer = self.namespace == RECOGNIZER
        async for event in self.session:
            if event.type == "error":
                await self.fail(event.code, event.message)
                return
            if event.type == "completed":
                result = {"result": join_texts(self.recognized)} if recognizer else None
                await self.send_event(COMPLETED[self.namespace], result)
                await self.close()
                return
            if recognizer:
                if await self._recognizer_event(event):
                    return
            else:
                await self._transcriber_event(event)

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
                result = {"result": join_texts(self.recognized)}
                await self.send_event(COMPLETED[RECOGNIZER], result)
                await self.close()
                return True
        return False


async def handle(request: web.Request) -> web.WebSocketResponse:
    settings = request.app[SETTINGS]
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_FRAME)
    await ws.prepare(request)
    conn = Connection(ws, settings, request)
    try:
        token = request.headers.get("X-NLS-Token") or request.query.get("token")
        check_token(settings, token, "X-NLS-Token header or token query parameter")
        await serve(conn, settings)
    except AuthError as exc:
        await conn.fail(exc.code, exc.message)
    finally:
        await conn.close()
        if conn.pump_task is not None and not conn.pump_task.done():
            conn.pump_task.cancel()
    return ws


async def serve(conn: Connection, settings: Settings) -> None:
    """Read client frames until the connection ends. Idle: no audio for ASR_IDLE_TIMEOUT s
    before stop; after stop the result must come within ASR_RESULT_TIMEOUT s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.asr_idle_timeout
    while not conn.closing:
        try:
            msg = await conn.ws.receive(timeout=max(0.0, deadline - loop.time()))
        except TimeoutError:
            if conn.stopped:
                await conn.fail(codes.SERVER_ERROR, "No final result in time")
            else:
                idle = settings.asr_idle_timeout
                await conn.fail(codes.IDLE_TIMEOUT, f"Idle timeout: no audio for {idle:g} s")
            return
        try:
            if msg.type == WSMsgType.BINARY:
                await conn.on_audio(msg.data)
                if not conn.stopped:
                    deadline = loop.time() + settings.asr_idle_timeout
            elif msg.type == WSMsgType.TEXT:
                started = conn.session is not None
                await conn.on_text(msg.data)
                if conn.stopped:
                    deadline = loop.time() + settings.asr_result_timeout
                elif not started and conn.session is not None:
                    deadline = loop.time() + settings.asr_idle_timeout
                    conn.pump_task = asyncio.create_task(conn.pump())
            else:  # close, closing, error
                return
        except (Failed, AuthError) as exc:
            await conn.fail(exc.code, exc.message)
            return
        except Exception as exc:  # e.g. the bus connection is down: say so, don't hang
            log.exception("task %s: internal error", conn.task_id or "-")
            await conn.fail(codes.SERVER_ERROR, f"Internal error: {exc.__class__.__name__}")
            return


def setup(app: web.Application) -> None:
    app.router.add_get("/ws/v1", handle)
    app.router.add_get("/ws/v1/asr", handle)
