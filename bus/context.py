"""Who a log line is about: the client's task id (NLS task_id, passed to engines as the open
request's trace_id), the bus session id and the engine id, in a context variable. asyncio
copies it into every task a session starts, so each line logged on the session's behalf carries
them; funspeech/logs.py puts them into every record (LOG_FORMAT=json shows them as fields).
The bridge sets task_id when a client names its task; the bus client adds session_id and
engine_id once a session is open; engines set all three for each session's task."""

from __future__ import annotations

from contextvars import ContextVar

FIELDS = ("task_id", "session_id", "engine_id")
_CONTEXT: ContextVar[dict[str, str] | None] = ContextVar("funspeech_log_context", default=None)


def bind(**fields: str) -> None:
    """Add fields to the current context (this task and the tasks it starts from now on)."""
    _CONTEXT.set({**current(), **{k: v for k, v in fields.items() if v}})


def current() -> dict[str, str]:
    return _CONTEXT.get() or {}
