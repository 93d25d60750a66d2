"""Voices: `/stream/v1/tts/voices`, `/info`, `/{name}`, create (`POST`) and `DELETE`
(X-NLS-Token). The voices folder is bridge/voices_folder.py, TTS health bridge/tts_health.py.

Preset voices come from the live TTS engines (EngineInfo.voices, with their aliases), cloned
voices from the voice store in JetStream (bus/voices.py), so every bridge and engine sees a new
voice at once. Without JetStream the lists still show the presets and say why clones are
missing; creating, deleting and importing answer 503 naming the fix.
"""

from __future__ import annotations

import asyncio
import io
import logging
import wave
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from bridge.asr_service import check_model, decode_audio, recognize
from bridge.audio import Pcm
from bridge.auth import check_token
from bridge.envelope import NlsEnvelope, dumps, new_task_id
from bridge.errors import NlsError, rest_response
from bridge.keys import BUS, ROUTES, SETTINGS
from bridge.openai_audio import read_form
from bridge.params import parse
from bridge.routes import RouteSpec, json_answer, register
from bridge.tts_params import RESERVED, CloneForm
from bus import codes
from bus.client import Bus
from bus.schemas import AsrParams, EngineInfo, VoiceDesc, VoiceRecord
from bus.voices import VoiceStore, VoiceStoreError, resolve_voice
from funspeech.settings import Settings

log = logging.getLogger("funspeech.bridge.voices")

MIN_PROMPT_S, MAX_PROMPT_S = 1.0, 30.0
TRANSCRIBE_TIMEOUT_S = 60.0


class VoiceAccess:
    """The voice store, opened on first use (and again after a failure: JetStream may come)."""

    def __init__(self, replicas: int = 1) -> None:
        self.replicas = replicas  # JETSTREAM_REPLICAS: a store this bridge creates has as many
        self._store: VoiceStore | None = None
        self._lock = asyncio.Lock()

    async def store(self, bus: Bus) -> VoiceStore:
        """The store; NlsError 503 (with the fix) without JetStream."""
        async with self._lock:
            if self._store is None:
                try:
                    self._store = await VoiceStore.open(bus.nc, bus.subjects, self.replicas)
                except VoiceStoreError as exc:
                    raise NlsError(codes.SERVER_ERROR, str(exc), http=503) from None
            return self._store

    async def clones(self, bus: Bus) -> tuple[list[VoiceRecord], str | None]:
        """The cloned voices, or [] and why there are none to list."""
        try:
            return await (await self.store(bus)).list(), None
        except NlsError as exc:
            return [], exc.message


VOICES = web.AppKey("voices", VoiceAccess)


# ---- what the engines and the store say
def presets(engines: list[EngineInfo]) -> dict[str, tuple[VoiceDesc, list[EngineInfo]]]:
    """Preset voices of the live TTS engines by id, with the engines that speak each."""
    out: dict[str, tuple[VoiceDesc, list[EngineInfo]]] = {}
    for engine in engines:
        for voice in engine.voices:
            out.setdefault(voice.id, (voice, []))[1].append(engine)
    return out


def can_clone(engines: list[EngineInfo]) -> bool:
    return any("clone" in e.features for e in engines)


def preset_info(voice: VoiceDesc, engines: list[EngineInfo]) -> dict[str, Any]:
    return {
        "name": voice.name,
        "type": "preset",
        "language": voice.language,
        "gender": voice.gender,
        "description": voice.description,
        "sample_rate": max((e.sample_rate for e in engines), default=0),
        "available": any(not e.draining for e in engines),
        "aliases": voice.aliases,
        "engines": [e.id for e in engines],
    }


def clone_info(record: VoiceRecord, engines: list[EngineInfo]) -> dict[str, Any]:
    desc = record.desc()
    return {
        "name": record.name,
        "type": "clone",
        "language": record.language,
        "gender": "",
        "description": desc.description,
        "sample_rate": record.sample_rate,
        "available": can_clone(engines),
        "reference_text": record.text,
        "added_at": datetime.fromtimestamp(record.created_at, UTC).isoformat(),
        "duration_ms": record.duration_ms,
        "source": record.source,
    }


def denied(request: web.Request) -> web.Response | None:
    try:
        check_token(request.app[SETTINGS], request.headers.get("X-NLS-Token"))
    except NlsError as exc:
        return rest_response(exc, new_task_id())
    return None


def error_response(exc: NlsError) -> web.Response:
    return rest_response(exc, new_task_id())


# ---- handlers
async def list_voices(request: web.Request) -> web.Response:
    if (refused := denied(request)) is not None:
        return refused
    bus = request.app[BUS]
    clones, why = await request.app[VOICES].clones(bus)
    names = [*presets(bus.directory.engines("tts")), *(r.name for r in clones)]
    body: dict[str, Any] = {"voices": names, "total": len(names)}
    if why:
        body["message"] = f"Cloned voices are not listed: {why}"
    return web.json_response(body, dumps=dumps)


async def voices_info(request: web.Request) -> web.Response:
    if (refused := denied(request)) is not None:
        return refused
    bus = request.app[BUS]
    engines = bus.directory.engines("tts")
    clones, why = await request.app[VOICES].clones(bus)
    found = presets(engines)
    voices = {v.name: preset_info(v, es) for v, es in found.values()}
    voices.update({r.name: clone_info(r, engines) for r in clones})
    body: dict[str, Any] = {
        "voices": voices,
        "total": len(voices),
        "preset_count": len(found),
        "clone_count": len(clones),
    }
    if why:
        body["message"] = f"Cloned voices are not listed: {why}"
    return web.json_response(body, dumps=dumps)


async def get_voice(request: web.Request) -> web.Response:
    if (refused := denied(request)) is not None:
        return refused
    name = request.match_info["name"]
    bus = request.app[BUS]
    engines = bus.directory.engines("tts")
    found = presets(engines)
    preset = resolve_voice(name, [v for v, _ in found.values()])
    if preset is not None:
        return web.json_response(preset_info(*found[preset.id]), dumps=dumps)
    try:
        record = await (await request.app[VOICES].store(bus)).get(name)
    except NlsError as exc:
        return error_response(exc)
    if record is None:
        return error_response(unknown(name))
    return web.json_response(clone_info(record, engines), dumps=dumps)


async def delete_voice(request: web.Request) -> web.Response:
    if (refused := denied(request)) is not None:
        return refused
    name = request.match_info["name"]
    bus = request.app[BUS]
    try:
        found = presets(bus.directory.engines("tts"))
        if resolve_voice(name, [v for v, _ in found.values()]) is not None:
            raise NlsError(codes.INVALID_PARAMETER, f"'{name}' is a preset voice: only cloned "
                           "voices can be deleted", http=409)  # fmt: skip
        store = await request.app[VOICES].store(bus)
        if not await store.delete(name):
            raise unknown(name)
    except NlsError as exc:
        return error_response(exc)
    log.info("voice %r deleted", name)
    return web.json_response({"message": f"Voice '{name}' deleted", "name": name}, dumps=dumps)


def unknown(name: str) -> NlsError:
    return NlsError(
        codes.INVALID_PARAMETER,
        f"No voice '{name}': GET /stream/v1/tts/voices lists the voices",
        http=404,
    )


async def create_voice(request: web.Request) -> web.Response:
    if (refused := denied(request)) is not None:
        return refused
    settings, bus = request.app[SETTINGS], request.app[BUS]
    try:
        form = parse(CloneForm, CloneForm.data(*await read_form(request, "audio")))
        engines = bus.directory.engines("tts")
        check_free(form.name, engines)
        store = await request.app[VOICES].store(bus)
        if await store.get(form.name) is not None:
            raise NlsError(codes.INVALID_PARAMETER, f"A voice named '{form.name}' exists: "
                           "DELETE /stream/v1/tts/voices/{name} it first", http=409)  # fmt: skip
        pcm = await decode_prompt(form.audio)
        text = (form.prompt_text or "").strip()
        if not text:
            text = await transcribe(bus, pcm, form.language, settings)
        record = await store.put(
            form.name,
            wav_bytes(pcm),
            text=text,
            sample_rate=pcm.sample_rate,
            duration_ms=round(pcm.duration_s * 1000),
            language=form.language or "",
        )
    except NlsError as exc:
        log.info("voice not created: %d %s", exc.code, exc.message)
        return error_response(exc)
    log.info("voice %r created: %.1f s prompt, %r", record.name, pcm.duration_s, record.text)
    body = clone_info(record, engines)
    location = f"/stream/v1/tts/voices/{record.name}"
    return web.json_response(body, status=201, headers={"Location": location}, dumps=dumps)


def check_free(name: str, engines: list[EngineInfo]) -> None:
    """A new voice may not take a route's name, nor a preset's or an alias's (a preset would
    always win: the clone could never be used)."""
    if name.casefold() in RESERVED:
        raise NlsError(codes.INVALID_PARAMETER, f"'{name}' is reserved: choose another name",
                       http=409)  # fmt: skip
    voice = resolve_voice(name, [v for e in engines for v in e.voices])
    if voice is not None:
        own = name.strip().casefold() in (voice.id.casefold(), voice.name.casefold())
        what = "a preset voice" if own else f"an alias of the preset voice {voice.id}"
        raise NlsError(codes.INVALID_PARAMETER, f"'{name}' is {what}: choose another name",
                       http=409)  # fmt: skip


async def decode_prompt(data: bytes) -> Pcm:
    pcm = await decode_audio(data, None, 16000, MAX_PROMPT_S)
    if pcm.duration_s < MIN_PROMPT_S:
        raise NlsError(
            codes.INVALID_PARAMETER,
            f"The prompt is {pcm.duration_s:.2f} s long: it must be "
            f"{MIN_PROMPT_S:g}-{MAX_PROMPT_S:g} s",
            param="audio",
        )
    return pcm


async def transcribe(bus: Bus, pcm: Pcm, language: str | None, settings: Settings) -> str:
    """The prompt's transcript from the ASR engines (prompt_text omitted)."""
    try:
        await check_model(bus, None, settings.asr_open_timeout)
    except NlsError:
        raise NlsError(codes.SERVER_ERROR, "prompt_text is omitted and no ASR engine runs to "
                       "transcribe the prompt: give prompt_text", http=503) from None  # fmt: skip
    # the language is a hint where an ASR model speaks it, else the engine detects it
    spoken = {lang for e in bus.directory.engines("asr") for m in e.models for lang in m.languages}
    hint = language if language in spoken else None
    params = AsrParams(language=hint, enable_intermediate_result=False)
    result = await recognize(bus, pcm, params, settings, TRANSCRIBE_TIMEOUT_S)
    if not result.text.strip():
        raise NlsError(codes.INVALID_PARAMETER, "No speech recognised in the prompt: give "
                       "prompt_text, or a clearer recording", param="audio")  # fmt: skip
    return result.text.strip()


def wav_bytes(pcm: Pcm) -> bytes:
    """16-bit mono WAV at the prompt's own rate."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(pcm.sample_rate)
        out.writeframes(pcm.data)
    return buf.getvalue()


# ---- route specs
class VoiceList(BaseModel):
    voices: list[str]
    total: int
    message: str | None = None


class VoiceInfo(BaseModel):
    name: str
    type: str
    language: str
    gender: str
    description: str
    sample_rate: int
    available: bool
    aliases: list[str] | None = None
    engines: list[str] | None = None
    reference_text: str | None = None
    added_at: str | None = None
    duration_ms: int | None = None
    source: str | None = None


class VoicesInfo(BaseModel):
    voices: dict[str, VoiceInfo]
    total: int
    preset_count: int
    clone_count: int
    message: str | None = None


class Deleted(BaseModel):
    message: str
    name: str


def envelope_answers(**table: str) -> dict[int, Any]:
    return {int(k[1:]): json_answer(text, NlsEnvelope) for k, text in table.items()}


DENIED = "Token missing or wrong (40000001)"
NO_STORE = "No JetStream (the message names the fix), or the bridge is shutting down"
NAME = {"name": {"schema": {"type": "string"}, "description": "A voice name or alias"}}
SPECS = [
    RouteSpec(
        "GET",
        "/stream/v1/tts/voices",
        list_voices,
        "Voice names: presets of the live engines, then cloned voices",
        auth="nls",
        answers={200: json_answer("Voices", VoiceList), **envelope_answers(s401=DENIED)},
        tags=("NLS",),
    ),
    RouteSpec(
        "GET",
        "/stream/v1/tts/voices/info",
        voices_info,
        "Every voice with its details",
        auth="nls",
        answers={200: json_answer("Voices by name", VoicesInfo), **envelope_answers(s401=DENIED)},
        tags=("NLS",),
    ),
    RouteSpec(
        "POST",
        "/stream/v1/tts/voices",
        create_voice,
        "Clone a voice from a prompt recording",
        "multipart/form-data: `name`, `audio` (1-30 s, any format the ASR reads; stored as "
        "16-bit mono WAV at its own rate), `prompt_text` (what it says; transcribed by the ASR "
        "engines when omitted), `language`.",
        body={"multipart/form-data": CloneForm},
        body_required=True,
        auth="nls",
        answers={
            201: json_answer("The new voice (Location: its URL)", VoiceInfo),
            **envelope_answers(
                s400="Bad name or audio (not audio, shorter than 1 s, longer than 30 s), no "
                "speech recognised",
                s401=DENIED,
                s408="Upload not received within HTTP_BODY_TIMEOUT",
                s409="The name is taken: a voice, a preset or alias, or reserved",
                s413="Upload larger than MAX_AUDIO_SIZE",
                s503="No JetStream, or prompt_text omitted and no ASR engine runs",
            ),
        },
        tags=("NLS",),
    ),
    RouteSpec(
        "GET",
        "/stream/v1/tts/voices/{name}",
        get_voice,
        "One voice (a preset, an alias of one, or a cloned voice)",
        auth="nls",
        path_params=NAME,
        answers={
            200: json_answer("The voice", VoiceInfo),
            **envelope_answers(s401=DENIED, s404="No such voice", s503=NO_STORE),
        },
        tags=("NLS",),
    ),
    RouteSpec(
        "DELETE",
        "/stream/v1/tts/voices/{name}",
        delete_voice,
        "Delete a cloned voice everywhere",
        auth="nls",
        path_params=NAME,
        answers={
            200: json_answer("Deleted", Deleted),
            **envelope_answers(s401=DENIED, s404="No such voice", s409="A preset", s503=NO_STORE),
        },
        tags=("NLS",),
    ),
]


# /voices/info and /voices/refresh are routes of their own, not voices named so
ONE_VOICE = "/stream/v1/tts/voices/{name:(?!(?:info|refresh)$)[^/]+}"


def setup(app: web.Application) -> None:
    app[VOICES] = VoiceAccess(app[SETTINGS].jetstream_replicas)
    register(app, [s for s in SPECS if not s.path_params])
    for spec in (s for s in SPECS if s.path_params):
        if spec.method == "GET":
            app.router.add_get(ONE_VOICE, spec.handler, allow_head=False)
        else:
            app.router.add_route(spec.method, ONE_VOICE, spec.handler)
        app[ROUTES].append(spec)
