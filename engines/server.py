"""What every engine process does, whatever its task: one backend on one device serving the bus.

It registers as the NATS micro service `funspeech-<task>`, serves the task's entry subjects in
the queue group `<task>` only while it has room (EntryGate), announces itself on the heartbeat
subject, publishes session events through one ordered outbox, ends sessions whose client
vanished, and drains on SIGTERM. Task engines (engines/asr_engine.py) add their endpoints and
sessions on top.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats.micro
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro.request import Request
from nats.micro.service import Service
from pydantic import BaseModel

from bus import codes, context
from bus.connect import connect
from bus.observer import stamp
from bus.schemas import EngineInfo, OpenReply, decode, encode, is_json
from bus.subjects import ENCODING_HEADER, HEARTBEAT_S, Subjects, Task
from engines.metrics import EngineMetrics

log = logging.getLogger("funspeech.engine")

SERVICE_VERSION = "1.1.0"
Handler = Callable[[Request], Awaitable[None]]


def engine_id_for(device: str) -> str:
    raw = f"{socket.gethostname()}-{device}-{os.getpid()}"
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)


def endpoint_name(*parts: str) -> str:
    """A micro endpoint name from parts (names allow letters, digits, '-', '_')."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", "_".join(parts))


class EntryGate:
    """Entry endpoints that sit in their queue group only while the engine has room: a full
    engine leaves, so requests go to engines with room, or fail at once with "no responders"
    when none has any. nats.py has no public per-endpoint stop; this uses the endpoint's own
    start/stop (tests/test_bus.py checks the no-responders behaviour this relies on)."""

    def __init__(self) -> None:
        self._endpoints: list[Any] = []
        self._open = True
        self._want = True
        self._wake = asyncio.Event()

    async def add(
        self, service: Service, name: str, subject: str, handler: Handler, queue: str
    ) -> None:
        await service.add_endpoint(name=name, subject=subject, handler=handler, queue_group=queue)
        self._endpoints.append(service._endpoints[-1])

    def want(self, open_: bool) -> None:
        if open_ != self._want:
            self._want = open_
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._open != self._want:
                target = self._want
                for endpoint in self._endpoints:
                    subscribed = endpoint._subscription is not None
                    if target and not subscribed:
                        await endpoint._start()
                    elif not target and subscribed:
                        await endpoint._stop()
                self._open = target
                log.debug("entry endpoints %s", "joined" if target else "left")

    def detach_closed(self, service: Service) -> None:
        """Before service.stop(): drop the endpoints this gate took out of their queue group
        (nats.py's stop asserts every endpoint still has its subscription)."""
        service._endpoints = [e for e in service._endpoints if e._subscription is not None]


class EngineSession(abc.ABC):
    """What the engine tracks of any session: its events subject and encoding, the last time
    the client sent something, and a way to end it from outside."""

    def __init__(
        self, engine: Engine, session_id: str, events_subject: str, json: bool, trace_id: str = ""
    ) -> None:
        self.engine = engine
        self.id = session_id
        self.events_subject = events_subject
        self.json = json
        self.trace_id = trace_id  # the client's task id, for the logs
        self.last_input = time.monotonic()
        self.stopping = False
        self.task: asyncio.Task[None] | None = None

    def send_event(self, event: Any) -> None:
        """Results carry their send time (the client's result-latency metric), acks not."""
        headers = None if event.type == "ack" else stamp()
        self.engine.publish_soon(self.events_subject, encode(event, self.json), headers)

    @abc.abstractmethod
    def error_event(self, code: int, message: str) -> Any: ...

    def fail(self, code: int, message: str) -> None:
        """End the session from outside (idle, drain, bus loss) with an error event."""
        self.send_event(self.error_event(code, message))
        if self.task:
            self.task.cancel()


class Engine(abc.ABC):
    task: Task
    open_schema: type[BaseModel]  # the task's session open request (AsrOpen, TtsOpen)

    def __init__(
        self,
        *,
        nats_url: str,
        device: str,
        capacity: int,
        namespace: str = "",
        session_timeout: float = 60.0,
        drain_timeout: float = 30.0,
        engine_id: str | None = None,
    ) -> None:
        self.nats_url = nats_url
        self.subjects = Subjects(namespace)
        self.device = device
        self.capacity = capacity
        self.session_timeout = session_timeout
        self.drain_timeout = drain_timeout
        self.id = engine_id or engine_id_for(device)
        self.sessions: dict[str, EngineSession] = {}
        self.oneshots = 0  # one-shot requests in progress (they count against capacity)
        self.draining = False
        self.started_at = time.time()
        self.nc: Client | None = None
        self.gate = EntryGate()
        self._room = asyncio.Event()
        self._room.set()
        self._outbox: asyncio.Queue[tuple[str, bytes, dict[str, str] | None]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.metrics = EngineMetrics()

    # ---- what a task engine provides
    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """EngineInfo fields of the task: backend, models/voices, features, mode, load."""

    @abc.abstractmethod
    async def add_endpoints(self, service: Service) -> None:
        """Entry endpoints through self.gate, per-engine endpoints on the service."""

    @abc.abstractmethod
    async def on_session_msg(self, msg: Msg) -> None:
        """A message on the engine's session wildcard."""

    @abc.abstractmethod
    def _open(self, request: Any, json: bool) -> OpenReply:
        """Start a session for a decoded open request, or say why not."""

    def close_backend(self) -> None:  # noqa: B027 - optional hook
        """Release the backend after the last session."""

    async def _on_open(self, req: Request) -> None:
        """A session open, on the entry subject or the engine's own: decode, open, reply."""
        json = is_json(req.data) or wants_json(req)
        try:
            request = decode(self.open_schema, req.data)
        except ValueError as exc:
            reply = OpenReply(ok=False, code=codes.INVALID_MESSAGE, message=f"Bad open: {exc}")
        else:
            reply = self._open(request, json)
        await req.respond(encode(reply, json))

    # ---- capacity
    @property
    def active(self) -> int:
        return len(self.sessions) + self.oneshots

    def has_room(self) -> bool:
        return not self.draining and self.active < self.capacity

    def load_changed(self) -> None:
        """Call after sessions or one-shots start or end: join or leave the queue groups."""
        room = self.has_room()
        self.gate.want(room)
        if room:
            self._room.set()
        else:
            self._room.clear()

    async def wait_room(self) -> None:
        """Until the engine has room for one more piece of work."""
        await self._room.wait()

    def add_session(self, session: EngineSession, run: Awaitable[None]) -> None:
        self.sessions[session.id] = session
        self.metrics.sessions += 1
        session.task = asyncio.create_task(self._run_session(session, run))
        self.load_changed()

    async def _run_session(self, session: EngineSession, run: Awaitable[None]) -> None:
        context.bind(task_id=session.trace_id, session_id=session.id)  # this task's log lines
        log.debug("session %s started (%d active)", session.id, len(self.sessions))
        try:
            await run
        finally:
            self.sessions.pop(session.id, None)
            self.load_changed()
            log.debug("session %s ended", session.id)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Future[Any]:
        """A background task the engine keeps a reference to (one-shot requests)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- events, in call order through one publisher
    def publish_soon(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self._outbox.put_nowait((subject, data, headers))

    async def _publisher(self) -> None:
        assert self.nc is not None
        while True:
            subject, data, headers = await self._outbox.get()
            self.metrics.published += 1
            try:
                await self.nc.publish(subject, data, headers=headers)
            except Exception as exc:  # the bus is down: the session fails on both sides
                log.debug("event to %s not published: %s", subject, exc)

    def outbox_depth(self) -> int:
        return self._outbox.qsize()

    async def _flush_outbox(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self._outbox.empty():
                    await asyncio.sleep(0.01)

    # ---- identity
    def info(self, gone: bool = False) -> EngineInfo:
        return EngineInfo(
            id=self.id,
            task=self.task,
            device=self.device,
            capacity=self.capacity,
            active=self.active,
            draining=self.draining,
            gone=gone,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=SERVICE_VERSION,
            started_at=self.started_at,
            stats=self.metrics.stats(self),
            latency=self.metrics.latency(),
            **self.describe(),
        )

    # ---- life cycle
    async def run(self, stop: asyncio.Event) -> None:
        context.bind(engine_id=self.id)  # every task started from here on logs it
        self.nc = await connect(
            self.nats_url,
            f"funspeech-engine-{self.id}",
            disconnected_cb=self._disconnected,
            reconnected_cb=self._reconnected,
        )
        info = self.info()
        service = await nats.micro.add_service(
            self.nc,
            name=self.subjects.service(self.task),
            version=SERVICE_VERSION,
            description=f"FunSpeech {self.task.upper()} engine",
            metadata={
                "engine_id": self.id,
                "backend": info.backend,
                "device": self.device,
                "models": ",".join(m.id for m in info.models),
                "voices": ",".join(v.id for v in info.voices),
                "capacity": str(self.capacity),
            },
            stats_handler=lambda _: {"active": self.active, "capacity": self.capacity},
        )
        await service.add_endpoint(
            name="ping", subject=self.subjects.engine(self.task, self.id, "ping"), handler=_pong
        )
        await self.add_endpoints(service)
        subs = [
            await self.nc.subscribe(
                self.subjects.session_wildcard(self.task, self.id), cb=self.on_session_msg
            ),
            await self.nc.subscribe(self.subjects.discover, cb=self._on_discover),
        ]
        background = [
            asyncio.create_task(self._publisher()),
            asyncio.create_task(self.gate.run()),
            asyncio.create_task(self._heartbeat()),
            asyncio.create_task(self._sweep()),
        ]
        log.info(
            "engine %s live: task=%s backend=%s device=%s capacity=%d",
            self.id,
            self.task,
            info.backend,
            self.device,
            self.capacity,
        )
        await self._announce()
        try:
            await stop.wait()
            await self._drain()
        finally:
            await self._shutdown(service, subs, background)

    async def _shutdown(
        self, service: Service, subs: list[Any], background: list[asyncio.Task[None]]
    ) -> None:
        assert self.nc is not None
        for task in list(self._tasks):
            task.cancel()
        try:
            await self.nc.publish(self.subjects.heartbeat, encode(self.info(gone=True)))
            for sub in subs:
                await sub.unsubscribe()
            self.gate.detach_closed(service)
            await service.stop()
            await self.nc.drain()
        except Exception as exc:  # the bus is gone already: nothing left to tell
            log.warning("engine %s: bus unavailable at shutdown (%s)", self.id, exc)
            await self.nc.close()
        for task in background:
            task.cancel()
        self.close_backend()
        log.info("engine %s stopped", self.id)

    async def _drain(self) -> None:
        """Take no new sessions; give live ones drain_timeout to finish, then fail them."""
        self.draining = True
        self.load_changed()
        await self._announce()
        log.info("engine %s draining %d session(s)", self.id, len(self.sessions))
        deadline = time.monotonic() + self.drain_timeout
        while self.active and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for session in list(self.sessions.values()):
            session.fail(codes.SERVER_ERROR, f"{self.task.upper()} engine is shutting down")
        await self._flush_outbox(2.0)
        with contextlib.suppress(Exception):
            assert self.nc is not None
            await self.nc.flush(timeout=2)

    async def _announce(self) -> None:
        assert self.nc is not None
        with contextlib.suppress(Exception):
            await self.nc.publish(self.subjects.heartbeat, encode(self.info()))

    async def _disconnected(self) -> None:
        """The connection to the bus broke: audio and control of live sessions may have been
        lost on the way, so they end, each with an error event. nats-py holds what is published
        while it reconnects and sends it first once connected again (to any server of the
        cluster), so the clients get a clean error even when they never noticed the break;
        a client that lost this engine meanwhile has failed the session on its side already.
        New sessions come once the connection is back."""
        if self.sessions:
            log.warning("engine %s lost the bus; ending %d session(s)", self.id, len(self.sessions))
        for session in list(self.sessions.values()):
            session.fail(
                codes.SERVER_ERROR,
                f"{self.task.upper()} engine {self.id} lost its connection to the bus",
            )

    async def _reconnected(self) -> None:
        assert self.nc is not None
        url = self.nc.connected_url
        where = f"{url.hostname}:{url.port}" if url else "?"  # never the credentials
        log.info("engine %s reconnected to %s", self.id, where)
        await self._announce()

    async def _on_discover(self, msg: Msg) -> None:
        await self._announce()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            await self._announce()

    async def _sweep(self) -> None:
        """End sessions whose client vanished without a stop."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if not session.stopping and now - session.last_input > self.session_timeout:
                    session.fail(
                        codes.IDLE_TIMEOUT, f"Nothing received for {self.session_timeout:.0f} s"
                    )


async def _pong(req: Request) -> None:
    await req.respond(b"")


def wants_json(req: Request) -> bool:
    """The requester asked for JSON answers in the encoding header (msgpack otherwise)."""
    return (req.headers or {}).get(ENCODING_HEADER, "").lower() == "json"
