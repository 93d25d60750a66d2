"""The bus client: what the bridge and any internal service use to reach the engines.

bus = await Bus.connect("nats://127.0.0.1:4222")
session = await bus.open_asr(AsrParams(language="en"))
await session.send(pcm_16k_s16le)        # waits while the engine is a window behind
await session.stop()
async for event in session:              # begin / partial / end ... completed
    print(event.type, event.text)
result = await bus.recognize(pcm)        # one request; a session for bigger uploads
async for part in bus.synthesize("你好。", TtsParams(voice="xiaoyun", format="mp3")):
    if part.kind == "audio":             # encoded audio as it is made; events between
        out.write(part.audio)
job = await bus.submit_tts_job(long_text, TtsParams(voice="xiaoyun", format="wav"))
job = await (await bus.jobs()).wait(job.task_id, timeout=600)   # SUCCESS or FAILED
audio = await (await bus.jobs()).audio(job.task_id)
await bus.close()

Sessions open on the least-loaded engine from the directory, else through the entry subject's
queue group; when no engine has room the caller learns it at once (no waiting for one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from bus import context
from bus.codes import INVALID_PARAMETER, SERVER_ERROR, SUCCESS, TOO_MANY_REQUESTS
from bus.connect import connect
from bus.directory import EngineDirectory
from bus.jobs import JobStore
from bus.observer import NULL, STAMP_EVERY, BusObserver, age_s, stamp
from bus.schemas import (
    AsrControl,
    AsrEvent,
    AsrOpen,
    AsrParams,
    EngineInfo,
    OpenReply,
    Recognition,
    TtsControl,
    TtsEvent,
    TtsJob,
    TtsOpen,
    TtsParams,
    TtsRequest,
    decode,
    encode,
    recognize_headers,
)
from bus.subjects import EVENT_HEADER, MAX_PAYLOAD, TRACE_HEADER, Subjects, Task
from bus.text import join_texts
from bus.voices import resolve_voice

log = logging.getLogger("funspeech.bus")

DIRECT_OPEN_TIMEOUT_S = 1.0  # one engine's answer to an open request
LOST_CHECK_S = 0.25  # how often a wait for TTS audio looks whether its engine is still there
DIRECT_TRIES = 3  # engines asked directly before the queue group
CREDIT_TIMEOUT_S = 30.0  # send() gives up when the engine takes no audio for this long
# After the bus connection comes back, engines may not have re-joined their queue groups yet:
# for this long, "no responders" to a one-shot request is retried every REJOIN_RETRY_S.
REJOIN_GRACE_S = 5.0
REJOIN_RETRY_S = 0.2
HEADROOM = 4096  # bytes of a request kept free for headers and protocol


class BusError(Exception):
    """A failure with the NLS status code the client should see."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AsrSession:
    """One recognition session pinned to one engine. Iterate it for events; iteration ends
    after "completed" or "error"."""

    def __init__(self, bus: Bus, session_id: str) -> None:
        self.id = session_id
        self.engine_id = ""
        self._bus = bus
        self._events: asyncio.Queue[tuple[AsrEvent, float | None]] = asyncio.Queue()
        self._audio_subject = ""
        self._control_subject = ""
        self._window = 0
        self._sent = 0
        self._acked = 0
        self._credit = asyncio.Event()
        self._chunks = 0
        self._first_audio = 0.0  # monotonic, for the first-result latency
        self._stopped_at = 0.0  # monotonic, for the final-result latency
        self._results = False
        self._ended = False
        self.done = False

    def _bind(self, reply: OpenReply) -> None:
        self.engine_id = reply.engine_id
        self._audio_subject = reply.audio_subject
        self._control_subject = reply.control_subject
        self._window = reply.window_bytes

    async def send(self, pcm: bytes) -> None:
        """Raw PCM s16le mono at the session's sample rate, split to bus-sized messages.
        Waits while the engine is more than its window behind (never longer than
        CREDIT_TIMEOUT_S: then BusError 50000000)."""
        nc = self._bus.nc
        for start in range(0, len(pcm), MAX_PAYLOAD):
            if self.done:
                return
            chunk = pcm[start : start + MAX_PAYLOAD]
            if self._window and self._sent + len(chunk) - self._acked > self._window:
                await self._wait_credit(len(chunk))
                if self.done:
                    return
            if self._chunks % STAMP_EVERY:
                await nc.publish(self._audio_subject, chunk)
            else:  # one chunk in STAMP_EVERY carries its send time (engine latency metrics)
                self._first_audio = self._first_audio or time.monotonic()
                await nc.publish(self._audio_subject, chunk, headers=stamp())
            self._chunks += 1
            self._sent += len(chunk)
            self._bus.observer.chunk(len(chunk))

    async def _wait_credit(self, size: int) -> None:
        try:
            async with asyncio.timeout(CREDIT_TIMEOUT_S):
                while not self.done and self._sent + size - self._acked > self._window:
                    self._credit.clear()
                    await self._credit.wait()
        except TimeoutError:
            raise BusError(
                SERVER_ERROR, f"ASR engine took no audio for {CREDIT_TIMEOUT_S:g} s"
            ) from None

    async def stop(self) -> None:
        self._stopped_at = time.monotonic()
        await self._control(AsrControl(op="stop", sent_bytes=self._sent))

    async def control(self, params: AsrParams) -> None:
        await self._control(AsrControl(op="control", params=params))

    async def abort(self) -> None:
        if not self.done:
            with contextlib.suppress(NatsError):
                await self._control(AsrControl(op="abort"))
        self._finish(None)

    async def next_event(self, timeout: float | None = None) -> AsrEvent:
        """The next event; raises TimeoutError when none comes within timeout."""
        event, latency = await asyncio.wait_for(self._events.get(), timeout)
        self._observe(event, latency)
        if event.type in ("completed", "error"):
            self._finish(event.code if event.type == "error" else SUCCESS)
        return event

    def _observe(self, event: AsrEvent, latency: float | None) -> None:
        observer = self._bus.observer
        observer.event("asr", event.type, latency)
        if event.type in ("partial", "end") and not self._results and self._first_audio:
            self._results = True
            observer.first_partial(time.monotonic() - self._first_audio)
        elif event.type == "completed" and self._stopped_at:
            observer.final(time.monotonic() - self._stopped_at)

    def __aiter__(self) -> AsyncIterator[AsrEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[AsrEvent]:
        while True:
            event = await self.next_event()
            yield event
            if event.type in ("completed", "error"):
                return

    async def _control(self, message: AsrControl) -> None:
        if not self.done:
            await self._bus.nc.publish(self._control_subject, encode(message))

    def _deliver_msg(self, msg: Msg) -> None:
        self._deliver(decode(AsrEvent, msg.data), age_s(msg.headers))

    def _deliver(self, event: AsrEvent, latency: float | None = None) -> None:
        if event.acked_bytes > self._acked:  # flow control rides on every event
            self._acked = event.acked_bytes
            self._credit.set()
        if event.type == "ack":
            return
        self._events.put_nowait((event, latency))
        if event.type == "error":
            self._credit.set()

    def _fail(self, message: str) -> None:
        if not self.done:
            self._deliver(AsrEvent(type="error", code=SERVER_ERROR, message=message))

    def _finish(self, code: int | None) -> None:
        """code: how it ended (None: aborted by the client)."""
        self.done = True
        self._credit.set()
        self._bus._sessions.pop(self.id, None)
        if not self._ended:
            self._ended = True
            self._bus.observer.ended("asr", code)


@dataclass(slots=True)
class TtsMessage:
    """A message of a synthesis: `kind` "audio" (encoded audio in `audio`) or a TtsEvent type
    (the event in `event`)."""

    kind: str
    audio: bytes = b""
    event: TtsEvent | None = None

    @classmethod
    def of(cls, msg: Msg) -> TtsMessage:
        if (msg.headers or {}).get(EVENT_HEADER) == "audio":
            return cls("audio", audio=msg.data)
        event = decode(TtsEvent, msg.data)
        return cls(event.type, event=event)


class TtsSession:
    """A flowing synthesis pinned to one engine: push text as it comes, iterate the audio and
    events; iteration ends after "completed" or "error"."""

    def __init__(self, bus: Bus, session_id: str) -> None:
        self.id = session_id
        self.engine_id = ""
        self._bus = bus
        self._control_subject = ""
        self._messages: asyncio.Queue[TtsMessage] = asyncio.Queue()
        self._first_text = 0.0  # monotonic, for the first-audio latency
        self._audio = False
        self._ended = False
        self.done = False

    def _bind(self, reply: OpenReply) -> None:
        self.engine_id = reply.engine_id
        self._control_subject = reply.control_subject

    async def push(self, text: str) -> None:
        """More text; whole sentences are spoken as soon as they are complete."""
        self._first_text = self._first_text or time.monotonic()
        await self._control(TtsControl(op="text", text=text))

    async def stop(self) -> None:
        """No more text: speak what is buffered, then "completed"."""
        await self._control(TtsControl(op="stop"))

    async def abort(self) -> None:
        if not self.done:
            with contextlib.suppress(NatsError):
                await self._control(TtsControl(op="abort"))
        self._finish(None)

    async def next_message(self, timeout: float | None = None) -> TtsMessage:
        message = await asyncio.wait_for(self._messages.get(), timeout)
        if message.kind == "audio":
            if not self._audio and self._first_text:
                self._audio = True
                self._bus.observer.first_audio(time.monotonic() - self._first_text)
        else:
            self._bus.observer.event("tts", message.kind, None)
        if message.kind in ("completed", "error"):
            event = message.event
            self._finish(event.code if event is not None and message.kind == "error" else SUCCESS)
        return message

    def __aiter__(self) -> AsyncIterator[TtsMessage]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[TtsMessage]:
        while True:
            message = await self.next_message()
            yield message
            if message.kind in ("completed", "error"):
                return

    async def _control(self, message: TtsControl) -> None:
        if not self.done:
            await self._bus.nc.publish(self._control_subject, encode(message))

    def _deliver_msg(self, msg: Msg) -> None:
        self._messages.put_nowait(TtsMessage.of(msg))

    def _fail(self, message: str) -> None:
        if not self.done:
            event = TtsEvent(type="error", code=SERVER_ERROR, message=message)
            self._messages.put_nowait(TtsMessage("error", event=event))

    def _finish(self, code: int | None) -> None:
        """code: how it ended (None: aborted by the client)."""
        self.done = True
        self._bus._sessions.pop(self.id, None)
        if not self._ended:
            self._ended = True
            self._bus.observer.ended("tts", code)


class Bus:
    """A connection to the bus with a live directory of engines."""

    def __init__(self, nc: Client, namespace: str = "") -> None:
        self.nc = nc
        self.subjects = Subjects(namespace)
        self.client_id = uuid.uuid4().hex[:12]
        self.directory = EngineDirectory(nc, self.subjects, on_engine_lost=self._engine_lost)
        self._sessions: dict[str, AsrSession | TtsSession] = {}
        self._events_sub = None
        # pulsed when an engine or the connection is lost: one-shot requests are sent again
        self._loss = asyncio.Event()
        self._links = 0  # connections lost so far (a synthesis under way fails on one)
        self._back_at = -REJOIN_GRACE_S  # loop time the connection last came back
        self._jobs: JobStore | None = None
        self.observer: BusObserver = NULL  # metrics (bus/observer.py)

    @classmethod
    async def connect(
        cls, url: str = "nats://127.0.0.1:4222", name: str = "funspeech", namespace: str = ""
    ) -> Bus:
        """`url`: NATS_URL, one server or a comma-separated list (bus/connect.py)."""
        bus: Bus | None = None

        async def disconnected() -> None:
            if bus is not None:
                bus._connection_lost()

        async def reconnected() -> None:
            if bus is not None:
                bus._back_at = asyncio.get_running_loop().time()
                await bus.nc.publish(bus.subjects.discover, b"")

        nc = await connect(url, name, disconnected_cb=disconnected, reconnected_cb=reconnected)
        bus = cls(nc, namespace)
        await bus.start()
        return bus

    async def start(self) -> None:
        self._events_sub = await self.nc.subscribe(
            self.subjects.events_wildcard(self.client_id), cb=self._on_event
        )
        await self.directory.start()

    async def close(self) -> None:
        for session in list(self._sessions.values()):
            await session.abort()
        await self.directory.stop()
        try:
            await self.nc.drain()
        except Exception:  # not connected: nothing to drain
            await self.nc.close()

    async def open_asr(
        self,
        params: AsrParams | None = None,
        *,
        sample_rate: int = 16000,
        mode: str = "stream",
        timeout: float = 3.0,
        trace_id: str | None = None,
    ) -> AsrSession:
        """Open a session on the least-loaded engine with room. Raises BusError at once:
        40000003 for a model no engine has, 40000005 when every engine is full, 50000000 when
        none runs; 50000000 too when no engine answers within `timeout`. trace_id (default:
        the task_id of the log context, bus/context.py) goes to the engine for its logs."""
        params = params or AsrParams()
        session = AsrSession(self, uuid.uuid4().hex)
        request = AsrOpen(
            session_id=session.id,
            events_subject=self.subjects.events(self.client_id, session.id),
            mode=mode,  # type: ignore[arg-type]
            sample_rate=sample_rate,
            params=params,
            trace_id=_trace(trace_id),
        )
        self._sessions[session.id] = session
        try:
            self._check_model("asr", params.model)
            reply = await self._open("asr", encode(request), params.model, timeout)
        except BaseException as exc:
            self._sessions.pop(session.id, None)
            self._refused("asr", exc)
            raise
        session._bind(reply)
        self._opened("asr", session)
        return session

    async def open_tts(
        self, params: TtsParams | None = None, *, timeout: float = 3.0, trace_id: str | None = None
    ) -> TtsSession:
        """Open a flowing synthesis (FlowingSpeechSynthesizer) on an engine that speaks the
        voice. Raises BusError at once as open_asr does."""
        params = params or TtsParams()
        session = TtsSession(self, uuid.uuid4().hex)
        request = TtsOpen(
            session_id=session.id,
            events_subject=self.subjects.events(self.client_id, session.id),
            params=params,
            trace_id=_trace(trace_id),
        )
        self._sessions[session.id] = session
        try:
            reply = await self._open("tts", encode(request), self._tts_route(params), timeout)
        except BaseException as exc:
            self._sessions.pop(session.id, None)
            self._refused("tts", exc)
            raise
        session._bind(reply)
        self._opened("tts", session)
        return session

    def _opened(self, task: Task, session: AsrSession | TtsSession) -> None:
        self.directory.note_open(session.engine_id)
        self.observer.opened(task)
        context.bind(session_id=session.id, engine_id=session.engine_id)

    def _refused(self, task: Task, exc: BaseException) -> None:
        if isinstance(exc, BusError):
            self.observer.refused(task, exc.code)

    async def synthesize(
        self, text: str, params: TtsParams | None = None, *, timeout: float = 30.0
    ) -> AsyncIterator[TtsMessage]:
        """One synthesis, served by an engine of the queue group: yields the audio (encoded
        as params.format asks) and the events as they are made, up to "completed". Raises
        BusError for an error event, when no engine can take it (at once), when its engine is
        lost, or when nothing comes for `timeout` seconds. Left before "completed" (aclose(),
        a cancelled consumer), it tells the engine, which stops the synthesis."""
        params = params or TtsParams()
        route = self._tts_route(params)
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        engine_id, ended = "", False
        try:
            data = encode(TtsRequest(text=text, params=params))
            subject = self.subjects.entry("tts", "synthesize", route)
            trace = _trace(None)  # the engine's log lines carry the client's task id
            headers = {TRACE_HEADER: trace} if trace else None
            await self.nc.publish(subject, data, reply=inbox, headers=headers)
            loss = self._loss  # an engine lost before any answer may have taken the request
            links = self._links
            began, audio = time.monotonic(), False
            while True:
                msg = await self._next_tts(sub, timeout, engine_id, loss, links)
                no_responders = bool(msg and msg.headers and msg.headers.get("Status") == "503")
                if no_responders and self._rejoining():
                    await asyncio.sleep(REJOIN_RETRY_S)
                    msg = None
                if msg is None:  # sent again (idempotent, nothing was delivered yet)
                    loss, links = self._loss, self._links
                    await self.nc.publish(subject, data, reply=inbox, headers=headers)
                    continue
                if no_responders:
                    raise self._unavailable("tts", route)
                message = TtsMessage.of(msg)
                if message.event is not None:
                    if message.kind == "error":
                        ended = True
                        raise BusError(message.event.code, message.event.message)
                    engine_id = message.event.engine_id or engine_id
                elif not audio:
                    audio = True
                    self.observer.first_audio(time.monotonic() - began)
                if message.kind == "completed":
                    ended = True
                yield message
                if ended:
                    return
        finally:
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()
            if engine_id and not ended:
                with contextlib.suppress(NatsError):
                    cancel = self.subjects.engine("tts", engine_id, "cancel")
                    await self.nc.publish(cancel, inbox.encode())

    async def _next_tts(
        self, sub: Any, timeout: float, engine_id: str, loss: asyncio.Event, links: int
    ) -> Msg | None:
        """The next message of a synthesis; BusError when its engine or the connection is lost
        (what was sent meanwhile may be gone) or it is late; None when an engine or the
        connection was lost before the first answer (send the request again)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                return await sub.next_msg(timeout=min(LOST_CHECK_S, deadline - loop.time()))
            except NatsTimeout:
                if not engine_id and loss.is_set():
                    return None
                if engine_id and self._links != links:
                    raise BusError(SERVER_ERROR, "Lost the connection to the bus") from None
                if engine_id and self.directory.get(engine_id) is None:
                    raise BusError(
                        SERVER_ERROR, f"TTS engine {engine_id} stopped responding"
                    ) from None
                if loop.time() >= deadline:
                    raise BusError(SERVER_ERROR, f"No audio within {timeout:g} s") from None

    async def jobs(self) -> JobStore:
        """The async (long-text) TTS job store on this connection: submit, get, wait, audio
        (bus/jobs.py). Raises JobStoreError without JetStream."""
        if self._jobs is None:
            self._jobs = await JobStore.open(self.nc, self.subjects)
        return self._jobs

    async def submit_tts_job(
        self, text: str, params: TtsParams | None = None, *, notify_url: str | None = None
    ) -> TtsJob:
        """Queue an async synthesis of a long text (any length engines accept: 100,000
        characters) for the engines that speak the voice; returns the job (its task_id) at
        once. Poll it with `(await bus.jobs()).get(task_id)` or `.wait(...)`. The voice is not
        checked here: a job with a voice no engine speaks ends FAILED with the reason."""
        params = params or TtsParams()
        route = "clone" if self._tts_route(params) == "clone" else "preset"
        return await (await self.jobs()).submit(text, params, notify_url=notify_url, route=route)

    def _tts_route(self, params: TtsParams) -> str | None:
        """Presets go to every TTS engine; any other voice name to those that can clone."""
        engines = self.directory.engines("tts")
        if any(resolve_voice(params.voice, e.voices) for e in engines):
            return None
        return "clone" if any("clone" in e.features for e in engines) else None

    async def _open(self, task: Task, data: bytes, route: str | None, timeout: float):
        """An open request to the least-loaded fitting engine, else the entry queue group.
        `route` is the entry subject's suffix: a model id (ASR) or "clone" (TTS)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        candidates = self._candidates(task, route)
        # the directory knows engines of the task but none with room: in a cluster, one that
        # left the queue group a moment ago may still have interest on another server, which
        # takes the request and drops it (no "no responders"): wait briefly, then say full
        full = not candidates and self.directory.has_engines(task)
        for engine in candidates[:DIRECT_TRIES]:
            wait = min(DIRECT_OPEN_TIMEOUT_S, deadline - loop.time())
            if wait <= 0:
                break
            reply = await self._ask(self.subjects.engine(task, engine.id, "open"), data, wait)
            if reply is None:
                continue  # gone or silent: the directory will notice
            if reply.ok:
                return reply
            if reply.code != TOO_MANY_REQUESTS:
                raise BusError(reply.code, reply.message)
        subject = self.subjects.entry(task, "open", route)
        for _ in range(DIRECT_TRIES):  # an engine that filled up just now answers 40000005
            wait = deadline - loop.time()
            if wait <= 0:
                raise BusError(SERVER_ERROR, f"No {task.upper()} engine answered in time")
            if full:
                wait = min(wait, DIRECT_OPEN_TIMEOUT_S)
            try:
                msg = await self.nc.request(subject, data, timeout=wait)
            except NoRespondersError:
                raise self._unavailable(task, route) from None
            except NatsTimeout:
                if full:
                    raise self._unavailable(task, route) from None
                raise BusError(
                    SERVER_ERROR, f"No {task.upper()} engine answered in {timeout:g} s"
                ) from None
            except NatsError as exc:
                raise BusError(SERVER_ERROR, f"Bus unavailable: {exc}") from None
            reply = decode(OpenReply, msg.data)
            if reply.ok or reply.code != TOO_MANY_REQUESTS:
                break
        if not reply.ok:
            raise BusError(reply.code, reply.message)
        return reply

    async def recognize(
        self,
        pcm: bytes,
        params: AsrParams | None = None,
        *,
        sample_rate: int = 16000,
        timeout: float = 120.0,
        open_timeout: float = 3.0,
    ) -> Recognition:
        """One-shot recognition of a whole recording (raw PCM s16le mono): one request on the
        entry subject when it fits the server's max_payload, else a file-mode session."""
        params = params or AsrParams()
        self._check_model("asr", params.model)
        if len(pcm) + HEADROOM > self.nc.max_payload:
            return await self._recognize_session(pcm, params, sample_rate, timeout, open_timeout)
        headers = recognize_headers(params, sample_rate)
        if trace := _trace(None):
            headers[TRACE_HEADER] = trace  # for the engine's logs
        subject = self.subjects.entry("asr", "recognize", params.model)
        for _ in range(DIRECT_TRIES):  # an engine that filled up just now answers 40000005
            try:
                msg = await self._request_outliving_engines(subject, pcm, timeout, headers)
            except NoRespondersError:
                raise self._unavailable("asr", params.model) from None
            except NatsTimeout:
                raise BusError(SERVER_ERROR, f"No result within {timeout:.0f} s") from None
            except NatsError as exc:
                raise BusError(SERVER_ERROR, f"Bus unavailable: {exc}") from None
            result = decode(Recognition, msg.data)
            if result.ok or result.code != TOO_MANY_REQUESTS:
                break
        if not result.ok:
            raise BusError(result.code, result.message)
        return result

    async def _request_outliving_engines(
        self, subject: str, data: bytes, timeout: float, headers: dict[str, str]
    ) -> Msg:
        """A request to a queue group, sent again if an engine or the connection is lost
        meanwhile: the engine that took it may be gone, or its reply lost while the server was
        away (the request is idempotent: at worst a live engine does it twice). Just after a
        reconnect, "no responders" is retried while engines re-join their queue groups."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            request = asyncio.ensure_future(
                self.nc.request(subject, data, timeout=deadline - loop.time(), headers=headers)
            )
            lost = asyncio.ensure_future(self._loss.wait())
            await asyncio.wait({request, lost}, return_when=asyncio.FIRST_COMPLETED)
            lost.cancel()
            if not request.done():
                request.cancel()
                log.info("an engine or the bus connection was lost during a one-shot request; "
                         "sending it again")  # fmt: skip
                continue
            try:
                return request.result()
            except NoRespondersError:
                if not self._rejoining() or loop.time() + REJOIN_RETRY_S >= deadline:
                    raise
            await asyncio.sleep(REJOIN_RETRY_S)

    def _rejoining(self) -> bool:
        """Whether engines may still be re-joining their queue groups after a reconnect."""
        since = asyncio.get_running_loop().time() - self._back_at
        return not self.nc.is_connected or since < REJOIN_GRACE_S

    async def _recognize_session(
        self, pcm: bytes, params: AsrParams, sample_rate: int, timeout: float, open_timeout: float
    ) -> Recognition:
        session = await self.open_asr(
            params, sample_rate=sample_rate, mode="file", timeout=open_timeout
        )
        try:
            async with asyncio.timeout(timeout):
                await session.send(pcm)
                await session.stop()
                segments: list[AsrEvent] = []
                async for event in session:
                    if event.type == "end":
                        segments.append(event)
                    elif event.type == "error":
                        raise BusError(event.code, event.message)
                    elif event.type == "completed":
                        return Recognition(
                            engine_id=session.engine_id,
                            text=join_texts(s.text for s in segments),
                            duration_ms=event.duration_ms,
                            segments=segments,
                        )
        except TimeoutError:
            raise BusError(SERVER_ERROR, f"No result within {timeout:.0f} s") from None
        finally:
            if not session.done:
                await session.abort()
        raise BusError(SERVER_ERROR, "Session ended without a result")

    def _check_model(self, task: Task, model: str | None) -> None:
        if model and self.directory.has_engines(task):
            known = self.directory.model_ids(task)
            if model not in known:
                raise BusError(
                    INVALID_PARAMETER,
                    f"Unknown model '{model}', available: {', '.join(sorted(known))}",
                )

    def _candidates(self, task: Task, route: str | None) -> list[EngineInfo]:
        if task == "tts":
            ready = self.directory.candidates("tts")
            return [e for e in ready if route is None or route in e.features]
        return self.directory.candidates(task, route)

    def _unavailable(self, task: Task, route: str | None) -> BusError:
        """No engine answered an entry subject: none runs (50000000), none serves the model /
        can clone (40000003) or all are full (40000005)."""
        name = task.upper()
        if not self.directory.has_engines(task):
            return BusError(SERVER_ERROR, f"No {name} engine is running")
        if task == "tts" and route == "clone":
            if not any("clone" in e.features for e in self.directory.engines("tts")):
                return BusError(
                    INVALID_PARAMETER,
                    "The voice is not a preset and no TTS engine that can clone runs "
                    "(GET /stream/v1/tts/voices lists the voices)",
                )
        elif route and route not in self.directory.model_ids(task):
            return BusError(INVALID_PARAMETER, f"No {name} engine serves model '{route}'")
        return BusError(TOO_MANY_REQUESTS, f"Too many requests: every {name} engine is at capacity")

    async def _ask(self, subject: str, data: bytes, timeout: float) -> OpenReply | None:
        try:
            msg = await self.nc.request(subject, data, timeout=timeout)
            return decode(OpenReply, msg.data)
        except (NatsTimeout, NoRespondersError):
            return None
        except NatsError as exc:  # connection trouble: treat the engine as unavailable
            log.warning("open on %s failed: %s", subject, exc)
            return None

    async def _on_event(self, msg: Msg) -> None:
        session = self._sessions.get(msg.subject.rpartition(".")[2])
        if session is not None:
            session._deliver_msg(msg)

    def _engine_lost(self, engine_id: str) -> None:
        self._pulse_loss()
        for session in list(self._sessions.values()):
            if session.engine_id == engine_id:
                task = "ASR" if isinstance(session, AsrSession) else "TTS"
                session._fail(f"{task} engine {engine_id} stopped responding")

    def _pulse_loss(self) -> None:
        self._loss.set()
        self._loss = asyncio.Event()

    def _connection_lost(self) -> None:
        self._links += 1
        self._pulse_loss()
        for session in list(self._sessions.values()):
            session._fail("Lost the connection to the bus")


def _trace(trace_id: str | None) -> str:
    return trace_id if trace_id is not None else context.current().get("task_id", "")
