"""The TTS engine: one-shot syntheses and flowing sessions on one backend.

Entry endpoints (queue group "tts", only while the engine has room): `synthesize` answers on the
request's reply subject with the audio and events as they are made; `open` starts a flowing
session whose text arrives on the session's control subject. `synthesize.clone` / `open.clone`
are served only by engines whose backend can clone, so cloned voices reach one that can.

Every message to the client carries the header `Fs-Event`: `audio` (the body is encoded audio)
or a TtsEvent type (the body is the event). Text is cut into sentences here; each goes to the
backend, and its audio through post-processing (volume, pitch, rate) and the encoder at once.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import soundfile as sf
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro.request import Request
from nats.micro.service import Service

from bus import codes, context
from bus.jobs import JobStore, JobStoreError
from bus.schemas import (
    OpenReply,
    TtsControl,
    TtsEvent,
    TtsOpen,
    TtsParams,
    TtsRequest,
    VoiceRecord,
    Word,
    decode,
    encode,
    is_json,
)
from bus.subjects import EVENT_HEADER, MAX_PAYLOAD, TRACE_HEADER
from bus.voices import VoiceStore, VoiceStoreError, resolve_voice
from engines.audio_in import Inbox
from engines.server import Engine, EngineSession, wants_json
from engines.tts.base import PromptVoice, SynthesisOptions, TtsBackend
from engines.tts.encode import make_encoder
from engines.tts.post import PostProcessor, nls_speed, openai_speed
from engines.tts.text import SentenceBuffer, split_sentences
from engines.tts_jobs import JobWorker

log = logging.getLogger("funspeech.engine")

MAX_TEXT_CHARS = 100_000  # one request or one flowing session's pending text
Send = Callable[[str, bytes], None]


class TtsError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Speaker:
    """One synthesis: sentences in, encoded audio and sentence events out, times counted in
    the output audio."""

    def __init__(
        self,
        engine: TtsEngine,
        params: TtsParams,
        voice: str | PromptVoice,
        send: Send,
        json: bool = False,
    ) -> None:
        self.backend = engine.backend
        self.json = json
        self.params = params
        self.voice = voice
        self.send = send
        speed = openai_speed(params.speed) if params.speed else nls_speed(params.speech_rate)
        self.options = SynthesisOptions(
            speed=speed, instructions=params.instructions, language=params.language
        )
        self.post = PostProcessor(
            self.backend.sample_rate,
            params.sample_rate,
            volume=params.volume,
            pitch_rate=params.pitch_rate,
        )
        self.encoder = make_encoder(params.format, params.sample_rate)
        self.samples = 0  # at the backend's rate, produced so far
        self.index = 0
        send(
            "started",
            self._event(
                TtsEvent(
                    type="started",
                    sample_rate=params.sample_rate,
                    format=params.format,
                    engine_id=engine.id,
                )
            ),
        )

    def _ms(self, samples: int) -> int:
        return samples * 1000 // self.backend.sample_rate

    async def sentence(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        self.index += 1
        begin = self.samples
        self.send(
            "sentence_begin",
            self._event(
                TtsEvent(
                    type="sentence_begin", index=self.index, text=text, begin_ms=self._ms(begin)
                )
            ),
        )
        words: list[Word] = []
        async for piece in self.backend.synthesize(text, self.voice, self.options):
            self.samples += piece.audio.size
            self._audio(self.encoder.feed(self.post.process(piece.audio)))
            offset = self._ms(begin)
            words += [
                Word(text=w.text, begin_ms=w.begin_ms + offset, end_ms=w.end_ms + offset)
                for w in piece.words
            ]
        self.send(
            "sentence_end",
            self._event(
                TtsEvent(
                    type="sentence_end",
                    index=self.index,
                    text=text,
                    begin_ms=self._ms(begin),
                    end_ms=self._ms(self.samples),
                    words=words if self.params.enable_subtitle else None,
                )
            ),
        )

    def finish(self) -> None:
        self._audio(self.encoder.feed(self.post.flush()) + self.encoder.finish())
        done = TtsEvent(type="completed", duration_ms=self._ms(self.samples))
        self.send("completed", self._event(done))

    def _event(self, event: TtsEvent) -> bytes:
        return encode(event, self.json)

    def _audio(self, data: bytes) -> None:
        for start in range(0, len(data), MAX_PAYLOAD):
            self.send("audio", data[start : start + MAX_PAYLOAD])


class FlowingSession(EngineSession):
    """FlowingSpeechSynthesizer: text arrives in pieces; whole sentences are spoken as soon as
    they are complete, the rest at stop."""

    def __init__(self, engine: TtsEngine, request: TtsOpen, json: bool) -> None:
        super().__init__(engine, request.session_id, request.events_subject, json, request.trace_id)
        self.tts = engine
        self.request = request
        self.inbox: Inbox[TtsControl] = Inbox(MAX_TEXT_CHARS * 4)
        self.buffer = SentenceBuffer()

    def error_event(self, code: int, message: str) -> TtsEvent:
        return TtsEvent(type="error", code=code, message=message)

    def send_event(self, event: Any) -> None:
        self.tts.send_to(self.events_subject, event.type, encode(event, self.json))

    def take(self, msg: Msg) -> None:
        control = decode(TtsControl, msg.data)
        self.last_input = time.monotonic()
        if control.op == "abort":
            if self.task:
                self.task.cancel()
            return
        if not self.inbox.put(control):
            self.fail(codes.TOO_MANY_REQUESTS, "Too much text waiting to be synthesized")

    async def run(self) -> None:
        def send(kind: str, body: bytes) -> None:
            self.tts.send_to(self.events_subject, kind, body)

        try:
            voice = await self.tts.resolve(self.request.params.voice)
            speaker = Speaker(self.tts, self.request.params, voice, send, self.json)
            while True:
                item = await self.inbox.get()
                assert not isinstance(item, bytes)
                if item.op == "text":
                    for sentence in self.buffer.push(item.text):
                        await speaker.sentence(sentence)
                elif item.op == "stop":
                    self.stopping = True
                    for sentence in self.buffer.flush():
                        await speaker.sentence(sentence)
                    speaker.finish()
                    return
        except TtsError as exc:
            self.send_event(self.error_event(exc.code, exc.message))
        except ValueError as exc:  # something the backend can't do, said by the backend
            self.send_event(self.error_event(codes.INVALID_PARAMETER, str(exc)))
        except Exception as exc:
            log.exception("tts session %s failed", self.id)
            self.send_event(self.error_event(codes.SERVER_ERROR, f"Synthesis failed: {exc}"))


class TtsEngine(Engine):
    task = "tts"
    open_schema = TtsOpen

    def __init__(
        self,
        backend: TtsBackend,
        *,
        capacity: int = 0,
        mode: str = "",
        voice_replicas: int = 1,
        jobs_retention: float = 7 * 86400,
        part_chars: int = 400,
        **kw: Any,
    ) -> None:
        super().__init__(capacity=capacity or backend.capacity, **kw)
        self.backend = backend
        self.mode = mode
        self.voice_replicas = voice_replicas
        self.jobs_retention = jobs_retention
        self.part_chars = part_chars
        self.voices: VoiceStore | None = None
        self._prompts: dict[str, PromptVoice] = {}  # audio sha256 -> decoded prompt
        self._oneshots: dict[str, asyncio.Future[Any]] = {}  # reply inbox -> its synthesis

    def describe(self) -> dict[str, Any]:
        features = [
            f
            for f, on in (
                ("clone", self.backend.can_clone),
                ("instructions", self.backend.can_instruct),
            )
            if on
        ]
        return {
            "backend": self.backend.name,
            "voices": self.backend.voices,
            "features": features,
            "sample_rate": self.backend.sample_rate,
            "mode": self.mode,
            "load": self.backend.stats(),
        }

    def close_backend(self) -> None:
        self.backend.close()

    def send_to(self, subject: str, kind: str, body: bytes) -> None:
        self.publish_soon(subject, body, {EVENT_HEADER: kind})

    async def add_endpoints(self, service: Service) -> None:
        assert self.nc is not None
        await self._open_voices(self.nc)
        subjects = self.subjects
        suffixes = [None, "clone"] if self.backend.can_clone else [None]
        for verb, handler in (("synthesize", self._on_synthesize), ("open", self._on_open)):
            for suffix in suffixes:
                name = f"{verb}_{suffix}" if suffix else verb
                subject = subjects.entry("tts", verb, suffix)
                await self.gate.add(service, name, subject, handler, "tts")
        await service.add_endpoint(
            name="open_engine",
            subject=subjects.engine("tts", self.id, "open"),
            handler=self._on_open,
        )
        # a client that leaves a one-shot early says so here (body: the request's reply
        # subject): the synthesis stops and its slot is free at once
        await self.nc.subscribe(subjects.engine("tts", self.id, "cancel"), cb=self._on_cancel)

    async def _open_voices(self, nc: Client) -> None:
        """Cloned voices and async jobs live in JetStream; without it presets still work."""
        try:
            self.voices = await VoiceStore.open(nc, self.subjects, self.voice_replicas)
            jobs = await JobStore.open(
                nc, self.subjects, replicas=self.voice_replicas, retention_s=self.jobs_retention
            )
        except (VoiceStoreError, JobStoreError) as exc:
            log.warning("cloned voices and async synthesis unavailable: %s", exc)
            return
        self.spawn(await self.voices.watch(self._voice_changed))
        self.spawn(JobWorker(self, jobs, self.part_chars).run())

    def _voice_changed(self, name: str) -> None:
        self._prompts.clear()  # rare; the next request decodes its prompt again

    # ---- voices
    async def resolve(self, name: str) -> str | PromptVoice:
        preset = resolve_voice(name, self.backend.voices)
        if preset is not None:
            return preset.id
        record = await self.voices.get(name) if self.voices else None
        if record is None:
            raise TtsError(
                codes.INVALID_PARAMETER,
                f"Unknown voice '{name}': GET /stream/v1/tts/voices lists the voices",
            )
        if not self.backend.can_clone:
            raise TtsError(
                codes.INVALID_PARAMETER,
                f"'{name}' is a cloned voice and this engine's backend ({self.backend.name}) "
                "cannot clone: run a TTS engine with a cloning backend (TTS_BACKEND=cosyvoice)",
            )
        return await self._prompt(record)

    async def _prompt(self, record: VoiceRecord) -> PromptVoice:
        cached = self._prompts.get(record.audio_sha256)
        if cached is None:
            assert self.voices is not None
            wav = await self.voices.audio(record)
            audio, rate = await asyncio.to_thread(_read_wav, wav)
            cached = PromptVoice(
                id=f"{record.name}:{record.audio_sha256[:12]}",
                audio=audio,
                sample_rate=rate,
                text=record.text,
                language=record.language or None,
            )
            self._prompts[record.audio_sha256] = cached
        return cached

    # ---- one-shot
    async def _on_synthesize(self, req: Request) -> None:
        json = is_json(req.data) or wants_json(req)
        reply = (
            req._msg.reply
        )  # nats.py's Request keeps the message private; we stream to its inbox
        if not reply:
            return  # nowhere to send the audio
        if not self.has_room():
            self._fail(reply, codes.TOO_MANY_REQUESTS, "engine at capacity", json)
            return
        try:
            request = decode(TtsRequest, req.data)
        except ValueError as exc:
            self._fail(reply, codes.INVALID_PARAMETER, f"Bad synthesis request: {exc}", json)
            return
        self.oneshots += 1
        self.metrics.oneshots += 1
        self.load_changed()
        trace = (req.headers or {}).get(TRACE_HEADER, "")
        task = self.spawn(self._synthesize(request, reply, json, trace))
        self._oneshots[reply] = task
        task.add_done_callback(lambda _: self._oneshots.pop(reply, None))

    async def _on_cancel(self, msg: Msg) -> None:
        task = self._oneshots.get(msg.data.decode(errors="replace"))
        if task is not None and not task.done():
            task.cancel()

    async def speak(self, text: str, params: TtsParams, send: Send, json: bool = False) -> None:
        """Synthesize `text` sentence by sentence, sending audio and events as they come."""
        if len(text) > MAX_TEXT_CHARS:
            raise TtsError(codes.INVALID_PARAMETER, f"Text longer than {MAX_TEXT_CHARS} characters")
        voice = await self.resolve(params.voice)
        speaker = Speaker(self, params, voice, send, json)
        for sentence in split_sentences(text):
            await speaker.sentence(sentence)
        speaker.finish()

    async def _synthesize(
        self, request: TtsRequest, reply: str, json: bool, trace: str = ""
    ) -> None:
        context.bind(task_id=trace)  # this task's log lines

        def send(kind: str, body: bytes) -> None:
            self.send_to(reply, kind, body)

        try:
            await self.speak(request.text, request.params, send, json)
        except TtsError as exc:
            self._fail(reply, exc.code, exc.message, json)
        except ValueError as exc:
            self._fail(reply, codes.INVALID_PARAMETER, str(exc), json)
        except Exception as exc:
            log.exception("synthesis failed")
            self._fail(reply, codes.SERVER_ERROR, f"Synthesis failed: {exc}", json)
        except asyncio.CancelledError:
            log.info("synthesis stopped: the client left, or the engine is stopping")
            raise
        finally:
            self.oneshots -= 1
            self.load_changed()

    def _fail(self, subject: str, code: int, message: str, json: bool) -> None:
        event = TtsEvent(type="error", code=code, message=message)
        self.send_to(subject, "error", encode(event, json))

    # ---- flowing sessions
    def _open(self, request: TtsOpen, json: bool) -> OpenReply:
        if not self.has_room():
            return OpenReply(ok=False, code=codes.TOO_MANY_REQUESTS, message="engine at capacity")
        request.session_id = request.session_id or uuid.uuid4().hex
        if request.session_id in self.sessions:
            return OpenReply(ok=False, code=codes.INVALID_PARAMETER, message="session id in use")
        session = FlowingSession(self, request, json)
        self.add_session(session, session.run())
        return OpenReply(
            ok=True,
            session_id=session.id,
            engine_id=self.id,
            control_subject=self.subjects.session("tts", self.id, session.id, "ctl"),
        )

    async def on_session_msg(self, msg: Msg) -> None:
        head = msg.subject.rsplit(".", 1)[0]
        session = self.sessions.get(head.rpartition(".")[2])
        if isinstance(session, FlowingSession):
            session.take(msg)


def _read_wav(data: bytes) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return audio.mean(axis=1), int(rate)
