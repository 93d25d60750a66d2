"""OpenAI-compatible speech: `POST /v1/audio/speech`.

JSON body as the openai client sends it: `model` (any, ignored), `input` (at most 4096
characters), `voice` (a name or `{"id": name}`; OpenAI's names are aliases on the engines),
`response_format` (mp3 default, opus, aac, flac, wav, pcm: all 24 kHz, pcm raw s16le),
`speed` 0.25-4.0, `instructions`, `stream_format` audio (the bytes, chunked, as they are made)
or sse (`speech.audio.delta` events with base64 audio, then `speech.audio.done` with usage),
for every format. Bearer auth when APPTOKEN is set; errors in OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time

from aiohttp import web

from bridge.envelope import new_task_id
from bridge.errors import NlsError, openai_error, openai_response
from bridge.keys import BUS, SETTINGS
from bridge.openai_audio import OpenAIError, authorize
from bridge.openai_formats import sse
from bridge.params import parse
from bridge.routes import Answer, RouteSpec, json_answer, register
from bridge.tts_params import OPENAI_FORMATS, OPENAI_MAX_INPUT, OPENAI_RATE, SpeechRequest
from bridge.tts_rest import read_json
from bridge.tts_service import chain, check_text, close_stream, content_type, synthesize
from bus import codes, context
from bus.client import BusError, TtsMessage

log = logging.getLogger("funspeech.bridge.openai")

FRAME_MS = 20  # usage: output tokens are counted as 20 ms frames of audio


def usage(chars: int, duration_ms: int) -> dict[str, int]:
    """OpenAI's usage object; input tokens are characters of input, output tokens 20 ms
    frames of audio (no tokenizer runs here)."""
    out = -(-duration_ms // FRAME_MS)
    return {"input_tokens": chars, "output_tokens": out, "total_tokens": chars + out}


async def speech(request: web.Request) -> web.StreamResponse:
    rid = new_task_id()
    context.bind(task_id=rid)  # on this request's log lines, and the engine's
    settings, bus = request.app[SETTINGS], request.app[BUS]
    began = time.monotonic()
    try:
        authorize(request)
        data = await read_json(request, settings.http_body_timeout)
        check_text(data.get("input"), OPENAI_MAX_INPUT, "/v1/audio/speech", "input")
        body = parse(SpeechRequest, data)
        params = body.tts_params()
        log.debug("speech %s: %d chars, %s, %s", rid, len(body.input), params, body.stream_format)
        head, stream = await synthesize(bus, body.input, params, settings)
    except NlsError as exc:
        log.info("speech %s failed: %d %s", rid, exc.code, exc.message)
        return openai_response(exc, rid)
    except Exception as exc:
        log.exception("speech %s: internal error", rid)
        return openai_response(NlsError(codes.SERVER_ERROR, f"Internal error: {exc}"), rid)
    sse_mode = body.stream_format == "sse"
    mime = "text/event-stream" if sse_mode else content_type(params.format, OPENAI_RATE)
    headers = {"Content-Type": mime, "X-Request-ID": rid}
    if sse_mode:
        headers["Cache-Control"] = "no-cache"
    response = web.StreamResponse(headers=headers)
    response.enable_chunked_encoding()
    sent, duration_ms = 0, 0
    try:
        await response.prepare(request)
        async for message in chain(head, stream):
            sent += await _out(response, message, sse_mode)
            if message.kind == "completed" and message.event is not None:
                duration_ms = message.event.duration_ms
        if sse_mode:
            done = {"type": "speech.audio.done", "usage": usage(len(body.input), duration_ms)}
            await sse(response, done)
        await response.write_eof()
    except BusError as exc:
        log.warning("speech %s: failed after %d bytes: %d %s", rid, sent, exc.code, exc.message)
        if sse_mode:  # the stream can say so
            await sse(response, {"error": openai_error(NlsError(exc.code, exc.message))}, "error")
            await response.write_eof()
        else:
            request.protocol.force_close()
            if request.transport is not None:
                request.transport.close()
    except (ConnectionResetError, asyncio.CancelledError):
        log.info("speech %s: the client went away after %d bytes", rid, sent)
        raise
    finally:
        await close_stream(stream)
    log.info("speech %s: %d bytes of %s in %.2f s", rid, sent, params.format,
             time.monotonic() - began)  # fmt: skip
    return response


async def _out(response: web.StreamResponse, message: TtsMessage, sse_mode: bool) -> int:
    """Send a message's audio (raw, or as a delta event); the bytes of audio sent."""
    if message.kind != "audio" or not message.audio:
        return 0
    if sse_mode:
        b64 = base64.b64encode(message.audio).decode()
        await sse(response, {"type": "speech.audio.delta", "audio": b64})
    else:
        await response.write(message.audio)
    return len(message.audio)


# ---- route specs
def _errors(table: dict[int, str]) -> dict[int, Answer]:
    return {status: json_answer(text, OpenAIError) for status, text in table.items()}


AUDIO = {"type": "string", "format": "binary"}
MEDIA = sorted({content_type(f, OPENAI_RATE).split(";")[0] for f in OPENAI_FORMATS})
SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string", "enum": ["message", "error"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
    "description": "stream_format=sse: speech.audio.delta {audio: base64} events, then "
    "speech.audio.done {usage}",
}
SPECS = [
    RouteSpec(
        "POST",
        "/v1/audio/speech",
        speech,
        "OpenAI speech",
        "JSON as the openai client sends it. The audio streams as it is made, in every "
        "format; pcm is raw s16le mono at 24 kHz, as OpenAI's.",
        body={"application/json": SpeechRequest},
        body_required=True,
        auth="bearer",
        answers={
            200: Answer(
                "The audio in response_format (chunked), or server-sent events",
                {**{media: AUDIO for media in MEDIA}, "text/event-stream": SSE_EVENT},
            ),
            **_errors(
                {
                    400: "Bad field (`param` names it), unknown voice, a cloned voice with no "
                    "engine that can clone",
                    401: "Bearer token missing or wrong (invalid_api_key)",
                    408: "Body not received within HTTP_BODY_TIMEOUT",
                    429: "Every TTS engine at capacity (rate_limit_exceeded)",
                    500: "Synthesis failed before any audio",
                    503: "No TTS engine running, or the bridge is shutting down",
                }
            ),
        },
        tags=("OpenAI",),
    )
]


def setup(app: web.Application) -> None:
    register(app, SPECS)
