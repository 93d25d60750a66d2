"""One-shot ASR REST, NLS "一句话识别": `POST /stream/v1/asr`.

Audio in the body (or `audio_address`), parameters in the query, `X-NLS-Token` + `appkey`.
Answers the NLS envelope; the HTTP status follows envelope.http_status (docs/rest-api.md).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from bridge.asr_service import check_model, decode_audio, read_body, recognize
from bridge.auth import check_appkey, check_token
from bridge.envelope import NlsEnvelope, new_task_id, nls_response
from bridge.errors import NlsError, rest_response
from bridge.fetch import download
from bridge.keys import BUS, SETTINGS
from bridge.params import NlsAsrQuery, parse
from bridge.routes import Answer, RouteSpec, json_answer, register
from bus import codes, context
from bus.schemas import Recognition
from bus.text import join_texts

log = logging.getLogger("funspeech.bridge.asr")


def sentences(transcript: Recognition, words: bool) -> list[dict[str, Any]]:
    out = []
    for seg in transcript.segments:
        item: dict[str, Any] = {
            "text": seg.text.strip(),
            "begin_time": seg.begin_ms,
            "end_time": seg.time_ms,
        }
        if seg.confidence is not None:
            item["confidence"] = round(seg.confidence, 4)
        if words:
            item["words"] = [
                {"text": w.text.strip(), "startTime": w.begin_ms, "endTime": w.end_ms}
                for w in seg.words or []
            ]
        out.append(item)
    return out


async def handle(request: web.Request) -> web.Response:
    task_id = new_task_id()
    started = time.monotonic()
    try:
        response = await _handle(request, task_id)
    except NlsError as exc:
        log.info("asr %s failed: %d %s", task_id, exc.code, exc.message)
        return rest_response(exc, task_id)
    except Exception as exc:
        log.exception("asr %s: internal error", task_id)
        return nls_response(task_id, codes.SERVER_ERROR, f"Internal server error: {exc}")
    log.info("asr %s done in %.2f s", task_id, time.monotonic() - started)
    return response


async def _handle(request: web.Request, task_id: str) -> web.Response:
    settings, bus = request.app[SETTINGS], request.app[BUS]
    context.bind(task_id=task_id)  # on this request's log lines, and the engine's
    check_token(settings, request.headers.get("X-NLS-Token"))
    check_appkey(settings, request.query.get("appkey"))
    query = parse(NlsAsrQuery, dict(request.query))
    params = query.asr_params()
    log.debug("asr %s: %s, %s", task_id, query.format, params)
    await check_model(bus, params.model, settings.asr_open_timeout)
    if query.audio_address:
        data = await download(query.audio_address, settings)
    else:
        data = await read_body(request, settings)
    if not data:
        raise NlsError(codes.INVALID_MESSAGE, "Audio data is empty")
    pcm = await decode_audio(data, query.format, query.sample_rate, settings.asr_max_duration)
    transcript = await recognize(bus, pcm, params, settings, settings.asr_result_timeout)
    return nls_response(
        task_id,
        codes.SUCCESS,
        "SUCCESS",
        join_texts(s.text for s in transcript.segments),
        sentences=sentences(transcript, params.enable_words),
    )


def _errors(table: dict[int, str]) -> dict[int, Answer]:
    return {status: json_answer(text, NlsEnvelope) for status, text in table.items()}


SPECS = [
    RouteSpec(
        "POST",
        "/stream/v1/asr",
        handle,
        "One-shot recognition (NLS RESTful)",
        "Audio in the body (raw PCM s16le mono at `sample_rate`, or any container the bridge "
        "recognises), at most ASR_MAX_DURATION s; or `audio_address` instead of a body.",
        query=NlsAsrQuery,
        body={
            "application/octet-stream": {
                "type": "string",
                "format": "binary",
                "minLength": 2,
                "description": "The audio; empty only with `audio_address`",
            }
        },
        auth="nls",
        appkey=True,
        answers={
            200: json_answer("Recognised (status 20000000)", NlsEnvelope),
            **_errors(
                {
                    400: "Bad parameter or audio (40000002 / 40000003 / 41010101)",
                    401: "Token or appkey missing or wrong (40000001)",
                    408: "Body not received within HTTP_BODY_TIMEOUT (40000002)",
                    413: "Audio larger than MAX_AUDIO_SIZE (40000002)",
                    429: "Every engine at capacity (40000005)",
                    500: "Recognition failed (50000000)",
                    503: "No ASR engine running, or the bridge is shutting down (50000000)",
                }
            ),
        },
        tags=("NLS",),
    )
]


def setup(app: web.Application) -> None:
    register(app, SPECS)
