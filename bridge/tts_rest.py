"""NLS "语音合成 RESTful": `GET` and `POST /stream/v1/tts`.

Parameters in the query (GET, text at most 300 characters as NLS) or a JSON body (POST, at most
TTS_MAX_TEXT_LENGTH); the token in `X-NLS-Token` or `token`, `appkey` beside the text. The audio
is streamed as the engine makes it (chunked), with its format's Content-Type and a `task_id`
header. Errors before the first audio are the NLS envelope with a truthful HTTP status: the
bridge answers once the engine has started and sent its first audio (or failed). An error after
audio has gone out cuts the stream (the client sees an incomplete chunked body) and is logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web

from bridge.asr_service import body_timeout
from bridge.auth import check_appkey, check_token
from bridge.envelope import NlsEnvelope, new_task_id, nls_response
from bridge.errors import NlsError, rest_response
from bridge.keys import BUS, SETTINGS
from bridge.params import parse
from bridge.routes import Answer, RouteSpec, json_answer, register
from bridge.tts_params import GET_MAX_TEXT, NlsTtsBody, NlsTtsRequest, with_limit
from bridge.tts_service import chain, check_text, close_stream, content_type, synthesize
from bus import codes, context
from bus.client import BusError
from engines.tts.encode import MIME

log = logging.getLogger("funspeech.bridge.tts")
TOKEN_SOURCES = "X-NLS-Token header or token parameter"


def query_model() -> type[NlsTtsRequest]:
    return with_limit(NlsTtsRequest, GET_MAX_TEXT, "TtsQuery")  # type: ignore[return-value]


def body_model(limit: int) -> type[NlsTtsRequest]:
    return with_limit(NlsTtsBody, limit, "TtsBody")  # type: ignore[return-value]


async def read_json(request: web.Request, timeout: float) -> dict[str, Any]:
    try:
        async with asyncio.timeout(timeout):
            raw = await request.read()
    except TimeoutError:
        raise body_timeout(request.app[SETTINGS]) from None
    try:
        data = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise NlsError(codes.INVALID_MESSAGE, "The body must be a JSON object") from None
    if not isinstance(data, dict):
        raise NlsError(codes.INVALID_MESSAGE, "The body must be a JSON object")
    return data


async def handle(request: web.Request) -> web.StreamResponse:
    task_id = new_task_id()
    context.bind(task_id=task_id)  # on this request's log lines, and the engine's
    settings, bus = request.app[SETTINGS], request.app[BUS]
    began = time.monotonic()
    try:
        if request.method == "GET":
            data: dict[str, Any] = dict(request.query)
            model, limit, where = query_model(), GET_MAX_TEXT, "GET /stream/v1/tts"
        else:
            data = await read_json(request, settings.http_body_timeout)
            limit = settings.tts_max_text_length
            model, where = body_model(limit), "POST /stream/v1/tts (TTS_MAX_TEXT_LENGTH)"
        token = request.headers.get("X-NLS-Token") or _str(data.get("token"))
        check_token(settings, token or request.query.get("token"), TOKEN_SOURCES)
        check_appkey(settings, _str(data.get("appkey")) or request.query.get("appkey"))
        check_text(data.get("text"), limit, where)
        query = parse(model, data)
        params = query.tts_params()
        log.debug("tts %s: %d chars, %s", task_id, len(query.text), params)
        head, stream = await synthesize(bus, query.text, params, settings)
    except NlsError as exc:
        log.info("tts %s failed: %d %s", task_id, exc.code, exc.message)
        return rest_response(exc, task_id)
    except Exception as exc:
        log.exception("tts %s: internal error", task_id)
        return nls_response(task_id, codes.SERVER_ERROR, f"Internal server error: {exc}")
    mime = content_type(params.format, params.sample_rate, settings.tts_rest_mpeg_content_type)
    response = web.StreamResponse(headers={"Content-Type": mime, "task_id": task_id})
    response.enable_chunked_encoding()
    sent = 0
    try:
        await response.prepare(request)
        async for message in chain(head, stream):
            if message.kind == "audio":
                await response.write(message.audio)
                sent += len(message.audio)
        await response.write_eof()
    except BusError as exc:
        log.warning("tts %s: cut after %d bytes: %d %s", task_id, sent, exc.code, exc.message)
        _cut(request)
    except (ConnectionResetError, asyncio.CancelledError):
        log.info("tts %s: the client went away after %d bytes", task_id, sent)
        raise
    finally:
        await close_stream(stream)
    log.info("tts %s: %d bytes of %s in %.2f s", task_id, sent, params.format,
             time.monotonic() - began)  # fmt: skip
    return response


def _cut(request: web.Request) -> None:
    """End the connection without the last chunk: the client sees the stream is incomplete."""
    request.protocol.force_close()
    if request.transport is not None:
        request.transport.close()


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


# ---- route specs
AUDIO = {"type": "string", "format": "binary"}
AUDIO_TYPES = sorted({MIME[f].split(";")[0] for f in MIME})


def _errors(get: bool) -> dict[int, Answer]:
    limit = "300 characters" if get else "TTS_MAX_TEXT_LENGTH"
    table = {
        400: f"Bad parameter (40000003, 41010101 sample rate), text over {limit}, unknown "
        "voice, a cloned voice with no engine that can clone",
        401: "Token or appkey missing or wrong (40000001)",
        429: "Every TTS engine is at capacity (40000005)",
        500: "Synthesis failed before any audio (50000000)",
        503: "No TTS engine running, or the bridge is shutting down (50000000)",
    }
    if not get:
        table[408] = "Body not received within HTTP_BODY_TIMEOUT (40000002)"
    return {status: json_answer(text, NlsEnvelope) for status, text in table.items()}


def specs(max_text: int) -> list[RouteSpec]:
    ok = Answer(
        "The audio, streamed as it is made (chunked); Content-Type by format (pcm: "
        "audio/L16;rate=<sample_rate>;channels=1), or audio/mpeg for every format with "
        "TTS_REST_MPEG_CONTENT_TYPE. Header task_id.",
        {media: AUDIO for media in AUDIO_TYPES},
    )
    common = {"auth": "nls", "tags": ("NLS",)}
    return [
        RouteSpec(
            "GET",
            "/stream/v1/tts",
            handle,
            "Speech synthesis, query parameters (NLS RESTful)",
            "Text at most 300 characters (NLS); the token in X-NLS-Token or `token`.",
            query=query_model(),
            appkey=True,
            answers={200: ok, **_errors(True)},
            **common,  # type: ignore[arg-type]
        ),
        RouteSpec(
            "POST",
            "/stream/v1/tts",
            handle,
            "Speech synthesis, JSON body (NLS RESTful)",
            f"Text at most TTS_MAX_TEXT_LENGTH ({max_text}) characters; the token in "
            "X-NLS-Token or the body's `token`, `appkey` in the body (as NLS; the query "
            "string works too).",
            body={"application/json": body_model(max_text)},
            body_required=True,
            appkey=True,
            answers={200: ok, **_errors(False)},
            **common,  # type: ignore[arg-type]
        ),
    ]


def setup(app: web.Application) -> None:
    register(app, specs(app[SETTINGS].tts_max_text_length))
