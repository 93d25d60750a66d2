"""OpenAI-compatible transcription: `POST /v1/audio/transcriptions` and `GET /v1/models`.

Bearer auth (APPTOKEN). Errors use OpenAI's shape `{"error": {message, type, param, code}}`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel

from bridge.asr_service import (
    body_timeout,
    check_model,
    decode_audio,
    open_session,
    recognize,
    too_big,
)
from bridge.audio import Pcm
from bridge.auth import bearer, check_token
from bridge.envelope import new_task_id
from bridge.errors import NlsError, openai_error, openai_response
from bridge.keys import BUS, SETTINGS
from bridge.openai_formats import render, sse, stream_event
from bridge.params import TranscriptionForm
from bridge.routes import Answer, RouteSpec, json_answer, register
from bus import codes
from bus.client import Bus
from bus.schemas import AsrParams

log = logging.getLogger("funspeech.bridge.openai")

MAX_FIELD = 64 * 1024


def authorize(request: web.Request) -> None:
    token = bearer(request.headers.get("Authorization"))
    check_token(request.app[SETTINGS], token, "Authorization: Bearer header")


async def read_form(
    request: web.Request, file_field: str = "file"
) -> tuple[dict[str, list[str]], bytes | None]:
    """multipart/form-data -> (fields, the `file_field` part's bytes); every part bounded in
    size and time."""
    settings = request.app[SETTINGS]
    if not request.content_type.startswith("multipart/"):
        raise NlsError(codes.INVALID_MESSAGE, "The request must be multipart/form-data")
    fields: dict[str, list[str]] = {}
    upload: bytes | None = None
    try:
        async with asyncio.timeout(settings.http_body_timeout):
            async for part in await request.multipart():
                if not isinstance(part, BodyPartReader) or not part.name:
                    continue
                limit = settings.max_audio_size if part.name == file_field else MAX_FIELD
                data = bytearray()
                while chunk := await part.read_chunk(1 << 16):
                    data += chunk
                    if len(data) > limit:
                        raise too_big(limit, part.name, param=part.name)
                if part.name == file_field:
                    upload = bytes(data)
                else:
                    charset = part.get_charset(default="utf-8")
                    fields.setdefault(part.name, []).append(data.decode(charset, "replace"))
    except TimeoutError:
        raise body_timeout(settings) from None
    except (ValueError, HttpProcessingError) as exc:
        raise NlsError(codes.INVALID_MESSAGE, f"Malformed multipart body: {exc}") from None
    return fields, upload


def asr_params(form: TranscriptionForm, bus: Bus) -> AsrParams:
    return AsrParams(
        # a live model id selects it; OpenAI names (whisper-1, gpt-4o-transcribe...) -> default
        model=form.model if form.model in bus.directory.model_ids() else None,
        language=form.language,
        enable_punctuation=True,
        enable_itn=True,
        enable_words="word" in form.timestamp_granularities,
        enable_intermediate_result=False,
        hotwords=[form.prompt] if form.prompt else [],
    )


async def stream(
    request: web.Request, pcm: Pcm, params: AsrParams, timeout: float, rid: str
) -> web.StreamResponse:
    """transcript.text.delta per recognised sentence as the engine reports it, then done."""
    settings, bus = request.app[SETTINGS], request.app[BUS]
    session = await open_session(bus, params, pcm.sample_rate, settings, mode="file")
    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    response = web.StreamResponse(headers={**headers, "X-Request-ID": rid})
    texts: list[str] = []
    try:
        await response.prepare(request)
        await session.send(pcm.data)
        await session.stop()
        try:
            async with asyncio.timeout(timeout):
                async for event in session:
                    await stream_event(response, event, texts)
        except TimeoutError:
            late = NlsError(codes.SERVER_ERROR, f"No result within {timeout:.0f} s")
            await sse(response, {"error": openai_error(late)}, "error")
        await response.write_eof()
    except ConnectionResetError:
        log.info("transcription %s: client went away", rid)
    finally:
        if not session.done:
            await session.abort()
    return response


async def transcriptions(request: web.Request) -> web.StreamResponse:
    rid = new_task_id()
    settings, bus = request.app[SETTINGS], request.app[BUS]
    try:
        authorize(request)
        form = TranscriptionForm.from_form(*await read_form(request))
        await check_model(bus, None, settings.asr_open_timeout)  # 503 without engines
        params = asr_params(form, bus)
        pcm = await decode_audio(form.file, None, 16000, None)
        timeout = settings.asr_result_timeout + pcm.duration_s
        log.debug("transcription %s: %s, %.1f s of audio", rid, params, pcm.duration_s)
        if form.stream:
            response = await stream(request, pcm, params, timeout, rid)
            log.info("transcription %s: %.1f s of audio, streamed", rid, pcm.duration_s)
            return response
        words = "word" in form.timestamp_granularities
        transcript = await recognize(bus, pcm, params, settings, timeout)
        log.info("transcription %s: %.1f s of audio", rid, pcm.duration_s)
        return render(transcript, form.response_format, params, words, rid)
    except NlsError as exc:
        log.info("transcription %s failed: %d %s", rid, exc.code, exc.message)
        return openai_response(exc, rid)
    except Exception as exc:
        log.exception("transcription %s: internal error", rid)
        return openai_response(NlsError(codes.SERVER_ERROR, f"Internal error: {exc}"), rid)


async def models(request: web.Request) -> web.Response:
    try:
        authorize(request)
    except NlsError as exc:
        return openai_response(exc, new_task_id())
    seen: dict[str, dict[str, Any]] = {}
    for engine in request.app[BUS].directory.engines("asr"):
        for m in engine.models:
            created = int(engine.started_at)
            entry = {"id": m.id, "object": "model", "created": created, "owned_by": "funspeech"}
            seen.setdefault(m.id, entry)
    return web.json_response({"object": "list", "data": list(seen.values())})


# ---- route specs
class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail


class ModelEntry(BaseModel):
    id: str
    object: str
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: str
    data: list[ModelEntry]


def _errors(table: dict[int, str]) -> dict[int, Answer]:
    return {status: json_answer(text, OpenAIError) for status, text in table.items()}


TRANSCRIPT = {
    "type": "object",
    "required": ["text"],
    "properties": {"text": {"type": "string"}},
    "description": "json: {text, usage}; verbose_json / diarized_json add segments and more",
}
SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string", "enum": ["message", "error"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
    "description": "stream=true: transcript.text.delta events, then transcript.text.done",
}
SPECS = [
    RouteSpec(
        "POST",
        "/v1/audio/transcriptions",
        transcriptions,
        "OpenAI transcription",
        "multipart/form-data as the openai client sends it; unknown fields are ignored.",
        body={"multipart/form-data": TranscriptionForm},
        body_required=True,
        auth="bearer",
        answers={
            200: Answer(
                "Transcript in the requested response_format",
                {
                    "application/json": TRANSCRIPT,
                    "text/plain": {"type": "string"},
                    "application/x-subrip": {"type": "string"},
                    "text/vtt": {"type": "string"},
                    "text/event-stream": SSE_EVENT,
                },
            ),
            **_errors(
                {
                    400: "Bad field (`param` names it) or undecodable file",
                    401: "Bearer token missing or wrong (invalid_api_key)",
                    408: "Upload not received within HTTP_BODY_TIMEOUT",
                    413: "file larger than MAX_AUDIO_SIZE",
                    429: "Every engine at capacity (rate_limit_exceeded)",
                    500: "Recognition failed",
                    503: "No ASR engine running, or the bridge is shutting down",
                }
            ),
        },
        tags=("OpenAI",),
    ),
    RouteSpec(
        "GET",
        "/v1/models",
        models,
        "OpenAI model list (live ASR models)",
        auth="bearer",
        answers={
            200: json_answer("Models", ModelList),
            **_errors(
                {
                    401: "Bearer token missing or wrong (invalid_api_key)",
                    503: "The bridge is shutting down (service_unavailable)",
                }
            ),
        },
        tags=("OpenAI",),
    ),
]


def setup(app: web.Application) -> None:
    register(app, SPECS)
