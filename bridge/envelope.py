"""NLS response envelopes and the HTTP status each NLS status code maps to.

REST handlers answer `{"task_id", "result", "status", "message"}` with a `task_id` response
header, for success and failure alike. Unlike FunSpeech (HTTP 200 for most failures), the HTTP
status tells the truth too: 2xx success, 4xx the client's fault, 5xx ours (see docs/rest-api.md).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from bus import codes

MESSAGES = {
    codes.SUCCESS: "SUCCESS",
    codes.CLIENT_ERROR: "DEFAULT_CLIENT_ERROR",
    codes.AUTH_FAILED: "AUTHENTICATION_FAILED",
    codes.INVALID_MESSAGE: "INVALID_MESSAGE",
    codes.INVALID_PARAMETER: "INVALID_PARAMETER",
    codes.IDLE_TIMEOUT: "IDLE_TIMEOUT",
    codes.TOO_MANY_REQUESTS: "TOO_MANY_REQUESTS",
    codes.UNSUPPORTED_SAMPLE_RATE: "UNSUPPORTED_SAMPLE_RATE",
    codes.SERVER_ERROR: "DEFAULT_SERVER_ERROR",
}

HTTP_STATUS = {
    codes.SUCCESS: 200,
    codes.AUTH_FAILED: 401,
    codes.IDLE_TIMEOUT: 408,
    codes.TOO_MANY_REQUESTS: 429,
}


def new_task_id() -> str:
    return uuid.uuid4().hex


def code_name(code: int) -> str:
    return MESSAGES.get(code, "DEFAULT_CLIENT_ERROR" if code < 50000000 else "DEFAULT_SERVER_ERROR")


def http_status(code: int) -> int:
    """The HTTP status for an NLS status code: 401 auth, 429 busy, 400 other client errors,
    500 server errors. Callers pass 413 / 503 explicitly where those fit better."""
    if code in HTTP_STATUS:
        return HTTP_STATUS[code]
    return 400 if code < 50000000 else 500


def nls_response(
    task_id: str,
    code: int,
    message: str,
    result: Any = "",
    *,
    status: int | None = None,
    **extra: Any,
) -> web.Response:
    """The NLS envelope as a JSON response with the `task_id` header."""
    body = {"task_id": task_id, "result": result, "status": code, "message": message, **extra}
    return web.json_response(
        body,
        status=status if status is not None else http_status(code),
        headers={"task_id": task_id},
        dumps=dumps,
    )


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


# ---- the envelope's shape, for the OpenAPI document
class Word(BaseModel):
    text: str
    startTime: int = Field(description="ms")  # NLS field names
    endTime: int = Field(description="ms")


class Sentence(BaseModel):
    text: str
    begin_time: int = Field(description="ms from the start of the audio")
    end_time: int = Field(description="ms from the start of the audio")
    confidence: float | None = Field(None, description="the engine's, when it has one")
    words: list[Word] | None = Field(None, description="with enable_words")


class NlsEnvelope(BaseModel):
    task_id: str = Field(description="32 hex digits, also the `task_id` response header")
    result: str = Field(description="the recognised text; empty on failure")
    status: int = Field(description="NLS status code: 20000000 success", examples=[20000000])
    message: str
    sentences: list[Sentence] | None = Field(None, description="extension, on success")
