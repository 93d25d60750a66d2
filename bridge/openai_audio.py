"""OpenAI-compatible transcription: `POST /v1/audio/transcriptions` and `GET /v1/models`.

Bearer auth (APPTOKEN). Errors use OpenAI's shape `{"error": {message, type, param, code}}`.
Segment and word times are the engine's own, so srt/vtt get one cue per recognised sentence.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any

from aiohttp import BodyPartReader, web

from bridge.app import BUS, SETTINGS
from bridge.asr_rest import check_model, decode_audio, recognize
from bridge.audio import Pcm
from bridge.auth import AuthError, bearer, check_token
from bridge.envelope import NlsError, code_name, dumps, new_task_id
from bus import codes
from bus.client import Bus, BusError, Transcript
from bus.schemas import AsrEvent, AsrParams
from bus.text import join_texts
from funspeech.settings import Settings

log = logging.getLogger("funspeech.bridge.openai")

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
GRANULARITIES = ("word", "segment")
MAX_FIELD = 64 * 1024
ERROR_TYPES = {401: "invalid_request_error", 429: "rate_limit_error"}


class OpenAIError(Exception):
    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    @classmethod
    def from_nls(cls, exc: NlsError) -> OpenAIError:
        code = {429: "rate_limit_exceeded", 503: "service_unavailable"}.get(exc.http)
        return cls(exc.http, exc.message, code=code or code_name(exc.code).lower())

    def response(self, request_id: str) -> web.Response:
        kind = ERROR_TYPES.get(self.status)
        kind = kind or ("server_error" if self.status >= 500 else "invalid_request_error")
        body = {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        return web.json_response(
            {"error": body}, status=self.status, headers={"X-Request-ID": request_id}
        )


def authorize(request: web.Request) -> None:
    try:
        token = bearer(request.headers.get("Authorization"))
        check_token(request.app[SETTINGS], token, "Authorization: Bearer header")
    except AuthError as exc:
        raise OpenAIError(401, exc.message, code="invalid_api_key") from None


async def read_form(
    request: web.Request, settings: Settings
) -> tuple[dict[str, list[str]], bytes | None]:
    """multipart/form-data -> (fields, file bytes); every part bounded in size and time."""
    if not request.content_type.startswith("multipart/"):
        raise OpenAIError(400, "The request must be multipart/form-data")
    fields: dict[str, list[str]] = {}
    upload: bytes | None = None
    try:
        async with asyncio.timeout(settings.http_body_timeout):
            async for part in await request.multipart():
                if not isinstance(part, BodyPartReader) or not part.name:
                    continue
                limit = settings.max_audio_size if part.name == "file" else MAX_FIELD
                data = bytearray()
                while chunk := await part.read_chunk(1 << 16):
                    data += chunk
                    if len(data) > limit:
                        raise OpenAIError(
                            413, f"{part.name} exceeds the {limit} byte limit", param=part.name
                        )
                if part.name == "file":
                    upload = bytes(data)
                else:
                    charset = part.get_charset(default="utf-8")
                    fields.setdefault(part.name, []).append(data.decode(charset, "replace"))
    except TimeoutError:
        raise OpenAIError(408, "The upload was not received in time") from None
    except ValueError as exc:
        raise OpenAIError(400, f"Malformed multipart body: {exc}") from None
    return fields, upload


def _one(fields: dict[str, list[str]], name: str, default: str = "") -> str:
    values = fields.get(name)
    return values[-1].strip() if values else default


def _options(fields: dict[str, list[str]], bus: Bus) -> tuple[AsrParams, str, set[str], bool]:
    fmt = _one(fields, "response_format", "json").lower()
    if fmt not in RESPONSE_FORMATS:
        raise OpenAIError(
            400,
            f"Invalid response_format '{fmt}': use one of {', '.join(RESPONSE_FORMATS)}",
            param="response_format",
        )
    grains = {g.strip().lower() for g in fields.get("timestamp_granularities[]", [])}
    grains |= {g.strip().lower() for g in fields.get("timestamp_granularities", [])}
    if grains - set(GRANULARITIES):
        raise OpenAIError(
            400, "timestamp_granularities must be word and/or segment", "timestamp_granularities"
        )
    temperature = _one(fields, "temperature", "0")
    try:
        if not 0.0 <= float(temperature) <= 1.0:
            raise ValueError
    except ValueError:
        raise OpenAIError(400, "temperature must be within 0..1", param="temperature") from None
    stream = _one(fields, "stream", "false").lower()
    if stream not in ("true", "false", "1", "0", ""):
        raise OpenAIError(400, "stream must be true or false", param="stream")
    model = _one(fields, "model")
    prompt = _one(fields, "prompt")
    params = AsrParams(
        # a live model id selects it; OpenAI names (whisper-1, gpt-4o-transcribe...) -> default
        model=model if model in bus.directory.model_ids() else None,
        language=_one(fields, "language") or None,
        enable_punctuation=True,
        enable_itn=True,
        enable_words="word" in grains,
        enable_intermediate_result=False,
        hotwords=[prompt] if prompt else [],
    )
    return params, fmt, grains, stream in ("true", "1")


# ---- response bodies
def _clock(ms: int, sep: str) -> str:
    hours, rest = divmod(max(ms, 0), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{sep}{rest % 1000:03d}"


def _cues(t: Transcript) -> list[tuple[int, int, str]]:
    return [(s.begin_ms, s.time_ms, s.text.strip()) for s in t.segments if s.text.strip()]


def srt(t: Transcript) -> str:
    return "".join(
        f"{i}\n{_clock(b, ',')} --> {_clock(e, ',')}\n{text}\n\n"
        for i, (b, e, text) in enumerate(_cues(t), start=1)
    )


def vtt(t: Transcript) -> str:
    cues = "".join(f"{_clock(b, '.')} --> {_clock(e, '.')}\n{x}\n\n" for b, e, x in _cues(t))
    return "WEBVTT\n\n" + cues


def _usage(t: Transcript) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(t.duration_ms / 1000)}


def verbose(t: Transcript, params: AsrParams, grains: set[str]) -> dict[str, Any]:
    segments = []
    for i, s in enumerate(t.segments):
        logprob = math.log(s.confidence) if s.confidence else 0.0
        segments.append(
            {
                "id": i,
                "seek": 0,
                "start": s.begin_ms / 1000,
                "end": s.time_ms / 1000,
                "text": s.text.strip(),
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": round(logprob, 4),
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
            }
        )
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": params.language or "unknown",
        "duration": t.duration_ms / 1000,
        "text": join_texts(s.text for s in t.segments),
        "segments": segments,
        "usage": _usage(t),
    }
    if "word" in grains:
        body["words"] = [
            {"word": w.text.strip(), "start": w.begin_ms / 1000, "end": w.end_ms / 1000}
            for s in t.segments
            for w in s.words or []
        ]
    return body


def diarized(t: Transcript) -> dict[str, Any]:
    """No diarization runs: every segment is labelled speaker "A" (documented)."""
    segments = [
        {
            "type": "transcript.text.segment",
            "id": f"seg_{i}",
            "start": b / 1000,
            "end": e / 1000,
            "text": text,
            "speaker": "A",
        }
        for i, (b, e, text) in enumerate(_cues(t))
    ]
    text = join_texts(s.text for s in t.segments)
    body = {"task": "transcribe", "duration": t.duration_ms / 1000, "text": text}
    return {**body, "segments": segments, "usage": _usage(t)}


def render(t: Transcript, fmt: str, params: AsrParams, grains: set[str], rid: str) -> web.Response:
    headers = {"X-Request-ID": rid}
    if fmt == "text":
        return web.Response(text=join_texts(s.text for s in t.segments), headers=headers)
    if fmt == "srt":
        return web.Response(text=srt(t), content_type="application/x-subrip", headers=headers)
    if fmt == "vtt":
        return web.Response(text=vtt(t), content_type="text/vtt", headers=headers)
    if fmt == "verbose_json":
        body = verbose(t, params, grains)
    elif fmt == "diarized_json":
        body = diarized(t)
    else:
        body = {"text": join_texts(s.text for s in t.segments), "usage": _usage(t)}
    return web.json_response(body, headers=headers, dumps=dumps)


# ---- streaming (SSE)
async def _sse(
    response: web.StreamResponse, data: dict[str, Any], event: str | None = None
) -> None:
    head = f"event: {event}\n" if event else ""
    await response.write(f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n".encode())


async def stream(
    request: web.Request, bus: Bus, pcm: Pcm, params: AsrParams, timeout: float, rid: str
) -> web.StreamResponse:
    """transcript.text.delta per recognised sentence as the engine reports it, then done."""
    settings = request.app[SETTINGS]
    try:
        session = await bus.open_asr(
            params, sample_rate=pcm.sample_rate, mode="file", timeout=settings.asr_open_timeout
        )
    except BusError as exc:
        busy = exc.code == codes.SERVER_ERROR and not bus.directory.has_engines()
        raise OpenAIError.from_nls(NlsError(exc.code, exc.message, 503 if busy else None)) from None
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
                    await _stream_event(response, event, texts)
        except TimeoutError:
            error = {"message": f"No result within {timeout:.0f} s", "type": "server_error"}
            await _sse(response, {"error": error}, "error")
        await response.write_eof()
    except ConnectionResetError:
        log.info("transcription %s: client went away", rid)
    finally:
        if not session.done:
            await session.abort()
    return response


async def _stream_event(response: web.StreamResponse, event: AsrEvent, texts: list[str]) -> None:
    if event.type == "end":
        before = join_texts(texts)
        texts.append(event.text)
        delta = join_texts(texts)[len(before) :]
        if delta:
            await _sse(response, {"type": "transcript.text.delta", "delta": delta})
    elif event.type == "completed":
        seconds = math.ceil(event.duration_ms / 1000)
        usage = {"type": "duration", "seconds": seconds}
        done = {"type": "transcript.text.done", "text": join_texts(texts), "usage": usage}
        await _sse(response, done)
    elif event.type == "error":
        kind = "rate_limit_error" if event.code == codes.TOO_MANY_REQUESTS else "server_error"
        error = {"message": event.message, "type": kind, "code": code_name(event.code).lower()}
        await _sse(response, {"error": error}, "error")


# ---- handlers
async def transcriptions(request: web.Request) -> web.StreamResponse:
    rid = new_task_id()
    settings, bus = request.app[SETTINGS], request.app[BUS]
    try:
        authorize(request)
        fields, upload = await read_form(request, settings)
        if not upload:
            raise OpenAIError(400, "file is required and must not be empty", param="file")
        await check_model(bus, None, settings.asr_open_timeout)  # 503 without engines
        params, fmt, grains, streaming = _options(fields, bus)
        try:
            pcm = await decode_audio(upload, None, 16000, None)
        except NlsError as exc:
            if exc.code != codes.INVALID_MESSAGE:
                raise
            raise OpenAIError(400, exc.message, "file", "invalid_file") from None
        timeout = settings.asr_result_timeout + pcm.duration_s
        if streaming:
            return await stream(request, bus, pcm, params, timeout, rid)
        transcript = await recognize(bus, pcm, params, settings, timeout)
        log.info("transcription %s: %.1f s of audio", rid, pcm.duration_s)
        return render(transcript, fmt, params, grains, rid)
    except NlsError as exc:
        log.info("transcription %s failed: %d %s", rid, exc.code, exc.message)
        return OpenAIError.from_nls(exc).response(rid)
    except OpenAIError as exc:
        log.info("transcription %s failed: %d %s", rid, exc.status, exc.message)
        return exc.response(rid)
    except Exception as exc:
        log.exception("transcription %s: internal error", rid)
        return OpenAIError(500, f"Internal server error: {exc}").response(rid)


async def models(request: web.Request) -> web.Response:
    rid = new_task_id()
    try:
        authorize(request)
    except OpenAIError as exc:
        return exc.response(rid)
    seen: dict[str, dict[str, Any]] = {}
    for engine in request.app[BUS].directory.engines():
        for m in engine.models:
            created = int(engine.started_at)
            entry = {"id": m.id, "object": "model", "created": created, "owned_by": "funspeech"}
            seen.setdefault(m.id, entry)
    return web.json_response({"object": "list", "data": list(seen.values())})


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_get("/v1/models", models)
