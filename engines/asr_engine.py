"""The ASR engine: realtime and one-shot recognition sessions on one backend.

Entry endpoints (queue group "asr", only while the engine has room): `open[.<model>]` starts a
session, `recognize[.<model>]` answers a one-shot request with the whole result. A session's
audio and control arrive in order on the engine's session wildcard and are fed to the backend
by one task per session. Flow control: every event carries the audio taken so far
(`acked_bytes`); an `ack` event says it alone after half a window without other events.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import numpy as np
from nats.aio.msg import Msg
from nats.micro.request import Request
from nats.micro.service import Service

from bus import codes, context
from bus.schemas import (
    AsrControl,
    AsrEvent,
    AsrOpen,
    OpenReply,
    Recognition,
    decode,
    encode,
    params_from_headers,
)
from bus.subjects import TRACE_HEADER
from bus.text import join_texts
from engines.asr.base import SAMPLE_RATE, AsrBackend, StreamingAsr
from engines.audio_in import Inbox, PcmDecoder, decode_request
from engines.server import Engine, EngineSession, endpoint_name, wants_json

log = logging.getLogger("funspeech.engine")

WINDOW_S = 10  # flow-control window: seconds of audio a client may send ahead of the acks


class AsrSession(EngineSession):
    """One client session: audio and control arrive in order in `inbox`."""

    def __init__(self, engine: AsrEngine, request: AsrOpen, json: bool) -> None:
        super().__init__(engine, request.session_id, request.events_subject, json, request.trace_id)
        self.backend = engine.backend
        self.request = request
        self.params = request.params
        self.window = WINDOW_S * request.sample_rate * 2
        self.inbox: Inbox[AsrControl] = Inbox(2 * self.window)
        self.received = 0  # audio bytes that arrived
        self.taken = 0  # audio bytes fed to the backend
        self._acked = 0
        self._decoder = PcmDecoder(request.sample_rate, SAMPLE_RATE)
        self._chunks: list[np.ndarray] = []  # file mode: the upload until stop
        self.stream: StreamingAsr | None = None
        if request.mode == "stream":
            self.stream = self.backend.open_stream(self.params, self.send_event)

    def send_event(self, event: AsrEvent) -> None:
        """Every event carries the flow-control ack (audio taken so far): while results flow,
        no separate ack message is needed."""
        if self.taken > self._acked:
            event.acked_bytes = self._acked = self.taken
        super().send_event(event)

    def error_event(self, code: int, message: str) -> AsrEvent:
        return AsrEvent(type="error", code=code, message=message)

    def take(self, msg: Msg, kind: str) -> None:
        """A message for this session from the engine's subscription (arrival order)."""
        self.last_input = time.monotonic()
        if kind == "audio":
            self.engine.metrics.chunk(msg)
            self.received += len(msg.data)
            if not self.inbox.put(msg.data):
                seconds = self.inbox.limit / (2 * self.request.sample_rate)
                self.fail(
                    codes.TOO_MANY_REQUESTS,
                    f"Audio arrives faster than it can be recognised: more than {seconds:g} s "
                    "waiting (keep to the flow-control window of the open reply)",
                )
            return
        control = decode(AsrControl, msg.data)
        if control.op == "abort":
            if self.task:
                self.task.cancel()
        else:
            self.inbox.put(control)

    async def run(self) -> None:
        try:
            while True:
                item = await self.inbox.get()
                if isinstance(item, bytes):
                    await self._take_audio(self._decoder.decode(item))
                    self.taken += len(item)
                    if self.taken - self._acked >= self.window // 2:  # no event said it
                        self.send_event(AsrEvent(type="ack"))
                elif item.op == "control" and item.params is not None:
                    self.params = item.params
                    if self.stream:
                        self.stream.control(self.params)
                elif item.op == "stop":
                    self.stopping = True
                    self._check_loss(item.sent_bytes)
                    await self._take_audio(self._decoder.tail())
                    await self._finish()
                    return
        except ValueError as exc:  # a parameter the backend can't honour (e.g. language)
            self.send_event(self.error_event(codes.INVALID_PARAMETER, str(exc)))
        except Exception as exc:  # a backend failure ends this session only
            log.exception("session %s failed", self.id)
            self.send_event(self.error_event(codes.SERVER_ERROR, f"Recognition failed: {exc}"))
        finally:
            if self.stream:
                self.stream.close()

    def _check_loss(self, sent: int | None) -> None:
        if sent is not None and sent != self.received:
            log.warning(
                "session %s: client sent %d audio bytes, %d arrived", self.id, sent, self.received
            )

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
            for segment in await self.backend.transcribe(audio, self.params):
                self.send_event(segment)
        duration_ms = self._decoder.samples_in * 1000 // self.request.sample_rate
        self.send_event(AsrEvent(type="completed", duration_ms=duration_ms))


class AsrEngine(Engine):
    task = "asr"
    open_schema = AsrOpen

    def __init__(self, backend: AsrBackend, *, capacity: int = 0, mode: str = "", **kw: Any):
        super().__init__(capacity=capacity or backend.capacity, **kw)
        self.backend = backend
        self.mode = mode

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend.name,
            "models": self.backend.models,
            "mode": self.mode,
            "load": self.backend.stats(),
        }

    def close_backend(self) -> None:
        self.backend.close()

    async def add_endpoints(self, service: Service) -> None:
        subjects = self.subjects
        for verb, handler in (("open", self._on_open), ("recognize", self._on_recognize)):
            await self.gate.add(service, verb, subjects.entry("asr", verb), handler, "asr")
            for model in self.backend.models:
                subject = subjects.entry("asr", verb, model.id)
                await self.gate.add(service, endpoint_name(verb, model.id), subject, handler, "asr")
        await service.add_endpoint(
            name="open_engine",
            subject=subjects.engine("asr", self.id, "open"),
            handler=self._on_open,
        )

    # ---- sessions
    def _open(self, request: AsrOpen, json: bool) -> OpenReply:
        if not self.has_room():
            return OpenReply(ok=False, code=codes.TOO_MANY_REQUESTS, message="engine at capacity")
        if error := self._model_error(request.params.model):
            return error
        request.session_id = request.session_id or uuid.uuid4().hex
        if request.session_id in self.sessions:
            return OpenReply(ok=False, code=codes.INVALID_PARAMETER, message="session id in use")
        try:
            session = AsrSession(self, request, json)
        except ValueError as exc:
            return OpenReply(ok=False, code=codes.INVALID_PARAMETER, message=str(exc))
        except Exception as exc:
            log.exception("could not open session")
            return OpenReply(
                ok=False, code=codes.SERVER_ERROR, message=f"Could not open session: {exc}"
            )
        self.add_session(session, session.run())
        return OpenReply(
            ok=True,
            session_id=session.id,
            engine_id=self.id,
            audio_subject=self.subjects.session("asr", self.id, session.id, "audio"),
            control_subject=self.subjects.session("asr", self.id, session.id, "ctl"),
            window_bytes=session.window,
        )

    def _model_error(self, model: str | None) -> OpenReply | None:
        if model and all(m.id != model for m in self.backend.models):
            served = ", ".join(m.id for m in self.backend.models)
            return OpenReply(
                ok=False,
                code=codes.INVALID_PARAMETER,
                message=f"Unknown model '{model}' (this engine serves {served})",
            )
        return None

    async def on_session_msg(self, msg: Msg) -> None:
        head, kind = msg.subject.rsplit(".", 1)
        session = self.sessions.get(head.rpartition(".")[2])
        if isinstance(session, AsrSession):
            session.take(msg, kind)

    # ---- one-shot
    async def _on_recognize(self, req: Request) -> None:
        """Answered by a task of its own: the subscription keeps serving meanwhile."""
        json = wants_json(req)
        if not self.has_room():
            busy = Recognition(ok=False, code=codes.TOO_MANY_REQUESTS, message="engine at capacity")
            await req.respond(encode(busy, json))
            return
        self.oneshots += 1
        self.metrics.oneshots += 1
        self.load_changed()
        self.spawn(self._recognize(req, json))

    async def _recognize(self, req: Request, json: bool) -> None:
        context.bind(task_id=(req.headers or {}).get(TRACE_HEADER, ""))  # this task's log lines
        try:
            result = await self._recognition(req)
        finally:
            self.oneshots -= 1
            self.load_changed()
        try:
            await req.respond(encode(result, json))
        except Exception as exc:  # the bus went away meanwhile
            log.warning("one-shot result not delivered: %s", exc)

    async def _recognition(self, req: Request) -> Recognition:
        try:
            params, rate, fmt = params_from_headers(req.headers)
            if error := self._model_error(params.model):
                return Recognition(ok=False, code=error.code, message=error.message)
            audio = decode_request(req.data, rate, fmt, SAMPLE_RATE)
            segments = await self.backend.transcribe(audio, params)
        except ValueError as exc:
            return Recognition(ok=False, code=codes.INVALID_PARAMETER, message=str(exc))
        except Exception as exc:
            log.exception("one-shot recognition failed")
            return Recognition(
                ok=False, code=codes.SERVER_ERROR, message=f"Recognition failed: {exc}"
            )
        return Recognition(
            engine_id=self.id,
            text=join_texts(s.text for s in segments),
            duration_ms=audio.size * 1000 // SAMPLE_RATE,
            segments=segments,
        )
