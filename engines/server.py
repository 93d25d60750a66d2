"""An ASR engine process: one backend on one device, serving the bus.

It registers as the NATS micro service `funspeech-asr` (its `open` endpoint), announces its
load on the heartbeat subject, and runs one task per session that feeds the backend in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
from dataclasses import asdict

import nats
import nats.micro
import numpy as np
import soxr
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro.request import Request

from bus import codes, subjects
from bus.schemas import (
    AsrControl,
    AsrEvent,
    AsrOpen,
    AsrParams,
    EngineInfo,
    ModelDesc,
    OpenReply,
    WordOut,
    decode,
    encode,
)
from engines.asr.base import SAMPLE_RATE, AsrBackend, AsrOptions, StreamEvent, StreamingAsr

log = logging.getLogger("funspeech.engine")

SERVICE_VERSION = "1.0.0"


def options_from(params: AsrParams) -> AsrOptions:
    return AsrOptions(**params.model_dump())


def engine_id_for(device: str) -> str:
    raw = f"{socket.gethostname()}-{device}-{os.getpid()}"
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)


class Session:
    """One client session: audio and control arrive in order on `inbox`."""

    def __init__(self, engine: AsrEngine, request: AsrOpen) -> None:
        self.engine = engine
        self.id = request.session_id
        self.request = request
        self.options = options_from(request.params)
        self.inbox: asyncio.Queue[bytes | AsrControl] = asyncio.Queue()
        self.last_input = time.monotonic()
        self.stopping = False
        self.samples_in = 0
        self._carry = b""
        self._chunks: list[np.ndarray] = []
        self._resampler = (
            soxr.ResampleStream(request.sample_rate, SAMPLE_RATE, 1, dtype="float32")
            if request.sample_rate != SAMPLE_RATE
            else None
        )
        self.stream: StreamingAsr | None = None
        if request.mode == "stream":
            self.stream = engine.backend.open_stream(self.options, self._emit_stream_event)
        self.task: asyncio.Task[None] | None = None

    def emit(self, event: AsrEvent) -> None:
        self.engine.publish_soon(self.request.events_subject, encode(event))

    def _emit_stream_event(self, ev: StreamEvent) -> None:
        words = [WordOut(**asdict(w)) for w in ev.words] if ev.words else None
        self.emit(
            AsrEvent(
                type=ev.kind,
                index=ev.index,
                time_ms=ev.time_ms,
                begin_ms=ev.begin_ms,
                text=ev.text,
                confidence=ev.confidence,
                words=words,
            )
        )

    def _decode_pcm(self, data: bytes) -> np.ndarray:
        data = self._carry + data
        usable = len(data) - len(data) % 2
        self._carry = data[usable:]
        pcm = np.frombuffer(data[:usable], dtype="<i2")
        self.samples_in += pcm.size
        audio = pcm.astype(np.float32) / 32768.0
        if self._resampler is not None:
            audio = self._resampler.resample_chunk(audio)
        return audio

    def _resampler_tail(self) -> np.ndarray:
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        return self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)

    async def run(self) -> None:
        try:
            while True:
                item = await self.inbox.get()
                if isinstance(item, bytes):
                    await self._take_audio(self._decode_pcm(item))
                elif item.op == "control" and item.params is not None:
                    self.options = options_from(item.params)
                    if self.stream:
                        self.stream.control(self.options)
                elif item.op == "stop":
                    self.stopping = True
                    await self._take_audio(self._resampler_tail())
                    await self._finish()
                    return
                else:  # abort
                    return
        except ValueError as exc:  # a parameter the backend can't honour (e.g. language)
            self.emit(AsrEvent(type="error", code=codes.INVALID_PARAMETER, message=str(exc)))
        except Exception as exc:  # a backend failure ends this session only
            log.exception("session %s failed", self.id)
            self.emit(
                AsrEvent(
                    type="error", code=codes.SERVER_ERROR, message=f"Recognition failed: {exc}"
                )
            )
        finally:
            if self.stream:
                self.stream.close()
            self.engine.sessions.pop(self.id, None)

    async def _take_audio(self, audio: np.ndarray) -> None:
        if audio.size == 0:
            return
        if self.stream:
            await self.stream.feed(audio)
        else:
            self._chunks.append(audio)

    async def _finish(self) -> None:
        if self.stream:
            await self.stream.finish()
        else:
            audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
            self._chunks = []
            segments = await self.engine.backend.transcribe(audio, self.options)
            for index, seg in enumerate(segments, start=1):
                words = [WordOut(**asdict(w)) for w in seg.words] if seg.words else None
                self.emit(
                    AsrEvent(
                        type="end",
                        index=index,
                        begin_ms=seg.begin_ms,
                        time_ms=seg.end_ms,
                        text=seg.text,
                        confidence=seg.confidence,
                        words=words,
                    )
                )
        duration_ms = self.samples_in * 1000 // self.request.sample_rate
        self.emit(AsrEvent(type="completed", duration_ms=duration_ms))

    def fail(self, code: int, message: str) -> None:
        """End the session from outside (idle, drain) with an error event."""
        self.emit(AsrEvent(type="error", code=code, message=message))
        if self.task:
            self.task.cancel()


class AsrEngine:
    def __init__(
        self,
        backend: AsrBackend,
        *,
        nats_url: str,
        device: str,
        capacity: int = 0,
        session_timeout: float = 60.0,
        drain_timeout: float = 30.0,
        engine_id: str | None = None,
    ) -> None:
        self.backend = backend
        self.nats_url = nats_url
        self.device = device
        self.capacity = capacity or backend.capacity
        self.session_timeout = session_timeout
        self.drain_timeout = drain_timeout
        self.id = engine_id or engine_id_for(device)
        self.sessions: dict[str, Session] = {}
        self.draining = False
        self.started_at = time.time()
        self.nc: Client | None = None
        self._pending: set[asyncio.Task[None]] = set()

    # ---- publishing (in call order: tasks start FIFO and nats-py queues before awaiting)
    def publish_soon(self, subject: str, data: bytes) -> None:
        assert self.nc is not None
        task = asyncio.get_running_loop().create_task(self.nc.publish(subject, data))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def info(self, gone: bool = False) -> EngineInfo:
        return EngineInfo(
            id=self.id,
            backend=self.backend.name,
            device=self.device,
            models=[ModelDesc(**asdict(m)) for m in self.backend.models],
            capacity=self.capacity,
            active=len(self.sessions),
            draining=self.draining,
            gone=gone,
            load=self.backend.stats(),
            host=socket.gethostname(),
            pid=os.getpid(),
            version=SERVICE_VERSION,
            started_at=self.started_at,
        )

    async def run(self, stop: asyncio.Event) -> None:
        self.nc = await nats.connect(
            self.nats_url,
            name=f"funspeech-engine-{self.id}",
            ping_interval=5,
            max_outstanding_pings=2,
            max_reconnect_attempts=-1,
        )
        service = await nats.micro.add_service(
            self.nc,
            name=subjects.ASR_SERVICE,
            version=SERVICE_VERSION,
            description="FunSpeech ASR engine",
            metadata={
                "engine_id": self.id,
                "backend": self.backend.name,
                "device": self.device,
                "models": ",".join(m.id for m in self.backend.models),
                "capacity": str(self.capacity),
            },
            stats_handler=lambda _: {"active": len(self.sessions), "capacity": self.capacity},
        )
        await service.add_endpoint(
            name="open", subject=subjects.asr_open(self.id), handler=self._on_open
        )
        subs = [
            await self.nc.subscribe(subjects.asr_ping(self.id), cb=self._on_ping),
            await self.nc.subscribe(
                subjects.asr_session_wildcard(self.id), cb=self._on_session_msg
            ),
            await self.nc.subscribe(subjects.DISCOVER, cb=self._on_discover),
        ]
        background = [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._sweep())]
        log.info(
            "engine %s live: backend=%s device=%s models=%s capacity=%d",
            self.id,
            self.backend.name,
            self.device,
            ",".join(m.id for m in self.backend.models),
            self.capacity,
        )
        await self.nc.publish(subjects.HEARTBEAT, encode(self.info()))
        try:
            await stop.wait()
            await self._drain()
        finally:
            for task in background:
                task.cancel()
            try:
                await self.nc.publish(subjects.HEARTBEAT, encode(self.info(gone=True)))
                for sub in subs:
                    await sub.unsubscribe()
                await service.stop()
                await self.nc.drain()
            except Exception as exc:  # the bus is gone already: nothing left to tell
                log.warning("engine %s: bus unavailable at shutdown (%s)", self.id, exc)
                await self.nc.close()
            self.backend.close()
            log.info("engine %s stopped", self.id)

    async def _drain(self) -> None:
        """Take no new sessions; give live ones drain_timeout to finish, then fail them."""
        self.draining = True
        with contextlib.suppress(Exception):
            await self.nc.publish(subjects.HEARTBEAT, encode(self.info()))
        log.info("engine %s draining %d session(s)", self.id, len(self.sessions))
        deadline = time.monotonic() + self.drain_timeout
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for session in list(self.sessions.values()):
            session.fail(codes.SERVER_ERROR, "ASR engine is shutting down")
        await asyncio.sleep(0)
        with contextlib.suppress(Exception):
            await self.nc.flush(timeout=2)

    async def _on_open(self, req: Request) -> None:
        reply = self._open(decode(AsrOpen, req.data))
        await req.respond(encode(reply))

    def _open(self, request: AsrOpen) -> OpenReply:
        if self.draining or len(self.sessions) >= self.capacity:
            return OpenReply(ok=False, code=codes.TOO_MANY_REQUESTS, message="engine at capacity")
        model = request.params.model
        if model and all(m.id != model for m in self.backend.models):
            return OpenReply(
                ok=False, code=codes.INVALID_PARAMETER, message=f"Unknown model '{model}'"
            )
        try:
            session = Session(self, request)
        except ValueError as exc:
            return OpenReply(ok=False, code=codes.INVALID_PARAMETER, message=str(exc))
        except Exception as exc:
            log.exception("could not open session")
            return OpenReply(
                ok=False, code=codes.SERVER_ERROR, message=f"Could not open session: {exc}"
            )
        self.sessions[session.id] = session
        session.task = asyncio.create_task(session.run())
        return OpenReply(ok=True)

    async def _on_ping(self, msg: Msg) -> None:
        await msg.respond(b"")

    async def _on_discover(self, msg: Msg) -> None:
        await self.nc.publish(subjects.HEARTBEAT, encode(self.info()))

    async def _on_session_msg(self, msg: Msg) -> None:
        head, kind = msg.subject.rsplit(".", 1)
        session = self.sessions.get(head.rpartition(".")[2])
        if session is None:
            return
        if kind == "audio":
            session.last_input = time.monotonic()
            session.inbox.put_nowait(msg.data)
        else:
            control = decode(AsrControl, msg.data)
            if control.op == "abort" and session.task:
                session.task.cancel()
            else:
                session.inbox.put_nowait(control)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(subjects.HEARTBEAT_S)
            with contextlib.suppress(Exception):
                await self.nc.publish(subjects.HEARTBEAT, encode(self.info()))

    async def _sweep(self) -> None:
        """End sessions whose client vanished without a stop."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if not session.stopping and now - session.last_input > self.session_timeout:
                    session.fail(codes.IDLE_TIMEOUT, f"No audio for {self.session_timeout:.0f} s")
