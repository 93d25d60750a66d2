"""The bridge's one error type and its three wire forms: the NLS REST envelope, the NLS
WebSocket TaskFailed frame and OpenAI's error object."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

from bridge.envelope import code_name, http_status, nls_response
from bus import codes
from bus.client import Bus, BusError

OPENAI_TYPES = {401: "invalid_request_error", 429: "rate_limit_error"}
OPENAI_CODES = {429: "rate_limit_exceeded", 503: "service_unavailable"}


class NlsError(Exception):
    """A failure the client should see: an NLS status code and a message. `http` overrides the
    HTTP status the code maps to; `param` and `openai_code` fill OpenAI's fields."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        http: int | None = None,
        param: str | None = None,
        openai_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http = http if http is not None else http_status(code)
        self.param = param
        self.openai_code = openai_code

    @classmethod
    def from_bus(cls, exc: BusError, bus: Bus) -> NlsError:
        """A bus failure; a server error while no engine is live is 503 (unavailable)."""
        unavailable = exc.code == codes.SERVER_ERROR and not bus.directory.has_engines()
        return cls(exc.code, exc.message, http=503 if unavailable else None)


def rest_response(exc: NlsError, task_id: str) -> web.Response:
    """The NLS envelope with `result: ""`."""
    return nls_response(task_id, exc.code, exc.message, status=exc.http)


def task_failed(exc: NlsError, task_id: str, namespace: str) -> str:
    """The NLS TaskFailed frame (text)."""
    header = {
        "message_id": uuid.uuid4().hex,
        "task_id": task_id,
        "namespace": namespace,
        "name": "TaskFailed",
        "status": exc.code,
        "status_text": exc.message,
        "status_message": exc.message,
    }
    return json.dumps({"header": header}, ensure_ascii=False)


def openai_error(exc: NlsError) -> dict[str, Any]:
    """OpenAI's `{"message", "type", "param", "code"}`."""
    kind = OPENAI_TYPES.get(exc.http)
    kind = kind or ("server_error" if exc.http >= 500 else "invalid_request_error")
    code = exc.openai_code or OPENAI_CODES.get(exc.http) or code_name(exc.code).lower()
    return {"message": exc.message, "type": kind, "param": exc.param, "code": code}


def openai_response(exc: NlsError, request_id: str) -> web.Response:
    return web.json_response(
        {"error": openai_error(exc)}, status=exc.http, headers={"X-Request-ID": request_id}
    )
