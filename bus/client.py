"""The bus client: what the bridge and any internal service use to reach the engines.

bus = await Bus.connect("nats://127.0.0.1:4222")
session = await bus.open_asr(AsrParams(language="en"))
await session.send(pcm_16k_s16le)
await session.stop()
async for event in session:           # begin / partial / end ... completed
    print(event.type, event.text)
await bus.close()
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from bus import subjects
from bus.codes import INVALID_PARAMETER, SERVER_ERROR, TOO_MANY_REQUESTS
from bus.directory import EngineDirectory
from bus.schemas import AsrControl, AsrEvent, AsrOpen, AsrParams, OpenReply, decode, encode
from bus.text import join_texts

log = logging.getLogger("funspeech.bus")

OPEN_REQUEST_TIMEOUT_S = 1.0


class BusError(Exception):
    """A failure with the NLS status code the client should see."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Transcript:
    def __init__(self, segments: list[AsrEvent], duration_ms: int) -> None:
        self.segments = segments
        self.duration_ms = duration_ms

    @property
    def text(self) -> str:
        return join_texts(s.text for s in self.segments)


class AsrSession:
    """One recognition session pinned to one engine. Iterate it for events; iteration ends
    after "completed" or "error"."""

    def __init__(self, bus: Bus, session_id: str, engine_id: str) -> None:
        self.id = session_id
        self.engine_id = engine_id
        self._bus = bus
        self._events: asyncio.Queue[AsrEvent] = asyncio.Queue()
        self._audio_subject = subjects.asr_audio(engine_id, session_id)
        self._control_subject = subjects.asr_control(engine_id, session_id)
        self.done = False

    async def send(self, pcm: bytes) -> None:
        """Raw PCM s16le mono at the session's sample rate; split to bus-sized messages."""
        if self.done:
            return
        nc = self._bus.nc
        for start in range(0, len(pcm), subjects.MAX_PAYLOAD):
            await nc.publish(self._audio_subject, pcm[start : start + subjects.MAX_PAYLOAD])

    async def stop(self) -> None:
        await self._control(AsrControl(op="stop"))

    async def control(self, params: AsrParams) -> None:
        await self._control(AsrControl(op="control", params=params))

    async def abort(self) -> None:
        if not self.done:
            await self._control(AsrControl(op="abort"))
        self._finish()

    async def next_event(self, timeout: float | None = None) -> AsrEvent:
        """The next event; raises TimeoutError when none comes within timeout."""
        event = await asyncio.wait_for(self._events.get(), timeout)
        if event.type in ("completed", "error"):
            self._finish()
        return event

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

    def _deliver(self, event: AsrEvent) -> None:
        self._events.put_nowait(event)

    def _finish(self) -> None:
        self.done = True
        self._bus._sessions.pop(self.id, None)


class Bus:
    """A connection to the bus with a live directory of engines."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.client_id = uuid.uuid4().hex[:12]
        self.directory = EngineDirectory(nc, on_engine_lost=self._engine_lost)
        self._sessions: dict[str, AsrSession] = {}
        self._events_sub = None

    @classmethod
    async def connect(cls, url: str = "nats://127.0.0.1:4222", name: str = "funspeech") -> Bus:
        nc = await nats.connect(
            url, name=name, ping_interval=5, max_outstanding_pings=2, max_reconnect_attempts=-1
        )
        bus = cls(nc)
        await bus.start()
        return bus

    async def start(self) -> None:
        self._events_sub = await self.nc.subscribe(
            subjects.events_wildcard(self.client_id), cb=self._on_event
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
    ) -> AsrSession:
        """Open a session on the least-loaded engine with room. Raises BusError: 40000003 for a
        model no engine has, 40000005 when no engine takes it within timeout."""
        params = params or AsrParams()
        session_id = uuid.uuid4().hex
        request = AsrOpen(
            session_id=session_id,
            events_subject=subjects.events(self.client_id, session_id),
            mode=mode,  # type: ignore[arg-type]
            sample_rate=sample_rate,
            params=params,
        )
        session: AsrSession | None = None
        deadline = time.monotonic() + timeout
        refused: set[str] = set()
        while True:
            if params.model and self.directory.has_engines():
                known = self.directory.model_ids()
                if params.model not in known:
                    raise BusError(
                        INVALID_PARAMETER,
                        f"Unknown model '{params.model}', available: {', '.join(sorted(known))}",
                    )
            for engine in self.directory.candidates(params.model, exclude=refused):
                session = AsrSession(self, session_id, engine.id)
                self._sessions[session_id] = session
                reply = await self._request_open(engine.id, request)
                if reply is not None and reply.ok:
                    self.directory.note_open(engine.id)
                    return session
                self._sessions.pop(session_id, None)
                refused.add(engine.id)
                if reply is not None and reply.code != TOO_MANY_REQUESTS:
                    raise BusError(reply.code, reply.message)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            refused.clear()  # engines free up; try them all again after the next heartbeat
            await self.directory.wait_change(min(remaining, 0.25))
        if not self.directory.has_engines():
            raise BusError(SERVER_ERROR, "No ASR engine is running")
        raise BusError(TOO_MANY_REQUESTS, "Too many requests: every ASR engine is at capacity")

    async def recognize(
        self,
        pcm: bytes,
        params: AsrParams | None = None,
        *,
        sample_rate: int = 16000,
        timeout: float = 120.0,
        open_timeout: float = 3.0,
    ) -> Transcript:
        """One-shot recognition of a whole recording (raw PCM s16le mono)."""
        session = await self.open_asr(
            params, sample_rate=sample_rate, mode="file", timeout=open_timeout
        )
        try:
            await session.send(pcm)
            await session.stop()
            segments: list[AsrEvent] = []
            async with asyncio.timeout(timeout):
                async for event in session:
                    if event.type == "end":
                        segments.append(event)
                    elif event.type == "error":
                        raise BusError(event.code, event.message)
                    elif event.type == "completed":
                        return Transcript(segments, event.duration_ms)
        except TimeoutError:
            raise BusError(SERVER_ERROR, f"No result within {timeout:.0f} s") from None
        finally:
            if not session.done:
                await session.abort()
        raise BusError(SERVER_ERROR, "Session ended without a result")

    async def _request_open(self, engine_id: str, request: AsrOpen) -> OpenReply | None:
        try:
            msg = await self.nc.request(
                subjects.asr_open(engine_id), encode(request), timeout=OPEN_REQUEST_TIMEOUT_S
            )
            return decode(OpenReply, msg.data)
        except (NatsTimeout, NoRespondersError):
            return None
        except NatsError as exc:  # connection trouble: treat the engine as unavailable
            log.warning("open on %s failed: %s", engine_id, exc)
            return None

    async def _on_event(self, msg: Msg) -> None:
        session = self._sessions.get(msg.subject.rpartition(".")[2])
        if session is not None:
            session._deliver(decode(AsrEvent, msg.data))

    def _engine_lost(self, engine_id: str) -> None:
        for session in list(self._sessions.values()):
            if session.engine_id == engine_id:
                session._deliver(
                    AsrEvent(
                        type="error",
                        code=SERVER_ERROR,
                        message=f"ASR engine {engine_id} stopped responding",
                    )
                )
