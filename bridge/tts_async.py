"""Async long-text TTS, NLS "长文本语音合成" RESTful (docs/tts-async.md).

`POST /rest/v1/tts/async` stores the job in JetStream and answers its task_id at once; engines
synthesize it in parts (bus/jobs.py, engines/tts_jobs.py). `GET /rest/v1/tts/async` reports it
from the KV bucket (any bridge answers for any job), `GET /rest/v1/tts/async/audio/<file>`
streams the result from the object store. Credentials: `header.appkey` / `header.token` in the
body, `appkey` / `token` in the query, compared with APPKEY / APPTOKEN when they are set.
Without JetStream the endpoints answer 503 naming the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator

from aiohttp import web
from nats.errors import Error as NatsError

from bridge.envelope import dumps
from bridge.errors import NlsError
from bridge.keys import BUS, SETTINGS
from bridge.routes import Answer, RouteSpec, json_answer, register
from bridge.tts_async_access import (
    ASYNC,
    RETRY_S,
    AsyncJobs,
    authorize,
    json_body,
    parse,
    voice_route,
)
from bridge.tts_async_links import AUDIO_PATH, audio_address, base_url, secret, signed
from bridge.tts_async_models import (
    PATH,
    AsyncAnswer,
    AsyncAudioQuery,
    AsyncError,
    AsyncTtsHeader,
    AsyncTtsQuery,
    AsyncTtsSubmit,
    Unavailable,
    answer,
    error_response,
)
from bridge.tts_notify import Notifier, check_notify_url
from bus import codes
from bus.jobs import JobStoreError
from funspeech.settings import Settings

log = logging.getLogger("funspeech.bridge.tts_async")

FILE = re.compile(r"^([0-9a-f]{32})\.(pcm|wav|mp3)$")
MIME = {"pcm": "audio/L16", "wav": "audio/wav", "mp3": "audio/mpeg"}


def _internal(what: str, exc: Exception) -> web.Response:
    log.exception("async tts: %s failed", what)
    error = NlsError(codes.SERVER_ERROR, f"Internal server error: {exc!r}", http=500)
    return error_response(error)


def _unavailable(exc: Exception) -> NlsError:
    return NlsError(
        codes.SERVER_ERROR, f"Async synthesis unavailable: the bus failed ({exc!r})", http=503
    )


async def submit(request: web.Request) -> web.Response:
    settings, bus = request.app[SETTINGS], request.app[BUS]
    try:
        body = await json_body(request, settings)
        creds = parse(AsyncTtsHeader, body).header
        authorize(request, [creds.token], [creds.appkey], "header.token or X-NLS-Token")
        req = parse(AsyncTtsSubmit, body)
        payload, params = req.payload, req.payload.tts_request.params()
        notify_url = None
        if payload.enable_notify:
            if not payload.notify_url:
                raise NlsError(
                    codes.INVALID_PARAMETER,
                    "payload.notify_url is required with enable_notify",
                    param="payload.notify_url",
                )
            notify_url = await check_notify_url(payload.notify_url, settings)
        jobs, voices = await request.app[ASYNC].stores()
        try:
            route = await voice_route(bus, voices, params.voice)
            job = await jobs.submit(
                payload.tts_request.text,
                params,
                notify_url=notify_url,
                route=route,
                public_url=base_url(request, settings),
            )
        except (NatsError, JobStoreError) as exc:
            raise _unavailable(exc) from None
    except NlsError as exc:
        log.info("async tts refused: %d %s", exc.code, exc.message)
        return error_response(exc)
    except Exception as exc:
        return _internal("submit", exc)
    log.info(
        "async tts %s accepted: %d chars, voice %s, %s %d Hz%s",
        job.task_id,
        job.text_chars,
        params.voice,
        params.format,
        params.sample_rate,
        ", notify" if notify_url else "",
    )
    data = {"task_id": job.task_id, "audio_address": None, "notify_custom": None, "sentences": None}
    body = {
        "status": 200,
        "error_code": codes.SUCCESS,
        "error_message": "SUCCESS",
        "request_id": uuid.uuid4().hex,
        "data": data,
    }
    return web.json_response(body, dumps=dumps)


async def poll(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    try:
        authorize(request, [request.query.get("token")], [], "token or X-NLS-Token")
        query = parse(AsyncTtsQuery, dict(request.query))
        jobs, _ = await request.app[ASYNC].stores()
        try:
            job = await jobs.get(query.task_id)
        except NatsError as exc:
            raise _unavailable(exc) from None
        if job is None:
            raise NlsError(
                codes.INVALID_PARAMETER,
                f"Task {query.task_id} does not exist (unknown, or removed after "
                f"{settings.tts_async_retention:g} s)",
                http=404,
                param="task_id",
            )
        address, sentences = None, None
        if job.status == "SUCCESS":
            base = base_url(request, settings)
            address = audio_address(base, job.task_id, job.params.format, settings)
            if job.params.enable_subtitle:
                try:
                    sentences = await jobs.sentences(job.task_id)
                except NatsError as exc:
                    raise _unavailable(exc) from None
    except NlsError as exc:
        return error_response(exc)
    except Exception as exc:
        return _internal("poll", exc)
    return web.json_response(answer(job, address, sentences), dumps=dumps)


def _check_download(request: web.Request, name: str, query: AsyncAudioQuery) -> None:
    settings = request.app[SETTINGS]
    if secret(settings) is None or signed(name, query.expires, query.signature, settings):
        return  # auth off, or a valid link
    try:
        authorize(request, [query.token], [], "token or X-NLS-Token")
    except NlsError:
        if query.signature:
            raise NlsError(
                codes.AUTH_FAILED,
                "The link's signature is wrong or has expired: poll the task for a fresh "
                "audio_address",
            ) from None
        raise


async def audio(request: web.Request) -> web.StreamResponse:
    name = request.match_info["file"]
    try:
        query = parse(AsyncAudioQuery, dict(request.query))
        _check_download(request, name, query)
        match = FILE.match(name)
        if match is None:
            raise NlsError(
                codes.INVALID_PARAMETER, f"No such audio: {name[:80]}", http=404, param="file"
            )
        task_id, fmt = match.groups()
        jobs, _ = await request.app[ASYNC].stores()
        try:
            job = await jobs.get(task_id)
            info = await jobs.audio_info(task_id) if job and job.status == "SUCCESS" else None
        except NatsError as exc:
            raise _unavailable(exc) from None
        if job is None or info is None or job.params.format != fmt:
            raise NlsError(
                codes.INVALID_PARAMETER,
                f"No audio {name}: the task does not exist, has not succeeded, has another "
                "format, or was removed after the retention",
                http=404,
                param="file",
            )
    except NlsError as exc:
        return error_response(exc, request.path)
    except Exception as exc:
        return _internal("download", exc)
    content_type = MIME[fmt]
    if fmt == "pcm":
        content_type += f";rate={job.params.sample_rate};channels=1"
    response = web.StreamResponse(
        headers={
            "Content-Type": content_type,
            "Content-Length": str(info.size),
            "Content-Disposition": f'inline; filename="{name}"',
            "Cache-Control": "private, max-age=3600",
        }
    )
    await response.prepare(request)
    try:
        async for chunk in jobs.stream_audio(task_id):
            await response.write(chunk)
    except (JobStoreError, NatsError) as exc:
        log.warning("async tts %s: download broken off: %s", task_id, exc)
        raise  # the connection is closed: the client sees a short body
    await response.write_eof()
    return response


# ---- route specs (OpenAPI)
def _errors(table: dict[int, str]) -> dict[int, Answer]:
    return {status: json_answer(text, AsyncError) for status, text in table.items()}


UNAVAILABLE = json_answer(
    "No JetStream on the NATS (the message names the fix), or the bridge is stopping",
    Unavailable,
)
AUDIO_BINARY = {"type": "string", "format": "binary"}

SPECS = [
    RouteSpec(
        "POST",
        PATH,
        submit,
        "Submit a long-text synthesis (NLS async RESTful)",
        "Answers the task_id at once; poll GET with it. Credentials as NLS sends them "
        "(`header.token`, `header.appkey` in the body) or as on the other NLS routes "
        "(X-NLS-Token header, `appkey` query parameter); compared with APPTOKEN / APPKEY when "
        "they are set.",
        body={"application/json": AsyncTtsSubmit},
        body_required=True,
        auth="nls",
        appkey=True,
        answers={
            200: json_answer("Accepted: data.task_id", AsyncAnswer),
            **_errors(
                {
                    400: "Bad request: text, voice, format, sample_rate, notify_url "
                    "(40000002 / 40000003 / 41010101)",
                    401: "header.token or header.appkey missing or wrong (40000001)",
                    408: "Body not received within HTTP_BODY_TIMEOUT (40000002)",
                    413: "Body larger than MAX_AUDIO_SIZE (40000002)",
                    500: "Internal error (50000000)",
                }
            ),
            503: UNAVAILABLE,
        },
        tags=("NLS",),
    ),
    RouteSpec(
        "GET",
        PATH,
        poll,
        "State of a long-text synthesis",
        "RUNNING (with progress), SUCCESS (absolute audio_address, sentence times) or the "
        "failure (error_code / error_message of the job).",
        query=AsyncTtsQuery,
        auth="nls",
        appkey=True,
        answers={
            200: json_answer("The job's state", AsyncAnswer),
            **_errors(
                {
                    400: "Bad task_id (40000003)",
                    401: "token or appkey missing or wrong (40000001)",
                    404: "No such task, or removed after TTS_ASYNC_RETENTION (40000003)",
                    500: "Internal error (50000000)",
                }
            ),
            503: UNAVAILABLE,
        },
        tags=("NLS",),
    ),
    RouteSpec(
        "GET",
        AUDIO_PATH + "/{file}",
        audio,
        "Audio of a finished long-text synthesis",
        "The `audio_address` of a successful job. With auth on it is signed (expires, "
        "signature); token and appkey work instead.",
        query=AsyncAudioQuery,
        auth="nls",
        path_params={
            "file": {
                "description": "<task_id>.<format> as audio_address names it",
                "schema": {"type": "string", "pattern": FILE.pattern},
            }
        },
        appkey=True,
        answers={
            200: Answer("The audio", {mime: AUDIO_BINARY for mime in MIME.values()}),
            **_errors(
                {
                    400: "Bad query (40000003)",
                    401: "No valid signature, token or appkey (40000001)",
                    404: "No such audio, or removed after TTS_ASYNC_RETENTION (40000003)",
                    500: "Internal error (50000000)",
                }
            ),
            503: UNAVAILABLE,
        },
        tags=("NLS",),
    ),
]


def setup(app: web.Application) -> None:
    register(app, SPECS)
    app[ASYNC] = AsyncJobs(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        jobs = app[ASYNC]
        try:
            await jobs.stores()
        except NlsError as exc:
            log.warning("async TTS (/rest/v1/tts/async) unavailable: %s", exc.message)
        notifier = asyncio.create_task(_notify(jobs, app[SETTINGS]))
        yield
        notifier.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await notifier

    app.cleanup_ctx.append(lifecycle)


async def _notify(jobs: AsyncJobs, settings: Settings) -> None:
    """Deliver callbacks once the stores are there."""
    while True:
        try:
            store, _ = await jobs.stores()
        except NlsError:
            await asyncio.sleep(RETRY_S * 2)
            continue
        await Notifier(store, settings).run()
