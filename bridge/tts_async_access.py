"""What the async TTS routes (bridge/tts_async.py) need around their handlers: the JetStream
stores, opened on first use (and retried while JetStream is missing), the credentials NLS async
sends in the body or the query, the request body, and which engines can speak a voice."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bridge.asr_service import read_body
from bridge.auth import check_appkey, check_token
from bridge.errors import NlsError
from bridge.keys import BUS, SETTINGS
from bridge.tts_async_models import invalid
from bus import codes
from bus.client import Bus
from bus.jobs import JobStore, JobStoreError
from bus.schemas import JobRoute
from bus.voices import VoiceStore, VoiceStoreError, check_name, resolve_voice
from funspeech.settings import Settings

RETRY_S = 5.0  # while JetStream is unavailable, a request tries to open the stores this often
M = TypeVar("M", bound=BaseModel)


class AsyncJobs:
    """The JetStream stores of the async endpoints, opened on first use."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self._stores: tuple[JobStore, VoiceStore] | None = None
        self._error: NlsError | None = None
        self._tried = 0.0
        self._lock = asyncio.Lock()

    async def stores(self) -> tuple[JobStore, VoiceStore]:
        """The stores; NlsError 503 naming the fix while JetStream is unavailable."""
        if self._stores is not None:
            return self._stores
        async with self._lock:
            if self._stores is not None:
                return self._stores
            if self._error is not None and time.monotonic() - self._tried < RETRY_S:
                raise self._error
            self._tried = time.monotonic()
            settings, bus = self.app[SETTINGS], self.app[BUS]
            nc, subjects = bus.nc, bus.subjects
            try:
                jobs = await JobStore.open(
                    nc,
                    subjects,
                    replicas=settings.jetstream_replicas,
                    retention_s=settings.tts_async_retention,
                )
                voices = await VoiceStore.open(nc, subjects, settings.jetstream_replicas)
            except (JobStoreError, VoiceStoreError) as exc:
                self._error = NlsError(
                    codes.SERVER_ERROR, f"Async synthesis unavailable: {exc}", http=503
                )
                raise self._error from None
            self._stores, self._error = (jobs, voices), None
            return self._stores


ASYNC = web.AppKey("tts_async", AsyncJobs)


def parse(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc) from None


def authorize(
    request: web.Request, tokens: list[str | None], appkeys: list[str | None], source: str
) -> None:
    """NLS async carries its credentials in the body or the query; the X-NLS-Token header
    works too (as on every NLS route). A matching token and a matching appkey among those
    given pass; otherwise 40000001 about the first wrong (or missing) one."""
    settings = request.app[SETTINGS]
    header = request.headers.get("X-NLS-Token")
    _first_passing(lambda t: check_token(settings, t, source), [*tokens, header])
    _first_passing(lambda k: check_appkey(settings, k), [*appkeys, request.query.get("appkey")])


def _first_passing(check: Callable[[str | None], None], values: list[str | None]) -> None:
    error: NlsError | None = None
    for value in [v for v in values if v] or [None]:
        try:
            check(value)
            return
        except NlsError as exc:
            error = error or exc
    assert error is not None
    raise error


async def json_body(request: web.Request, settings: Settings) -> dict[str, Any]:
    raw = await read_body(request, settings)
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise NlsError(codes.INVALID_MESSAGE, "The body must be a JSON object (the NLS request)")
    return body


def _clone_name(name: str) -> bool:
    try:
        check_name(name)
    except ValueError:
        return False
    return True


async def voice_route(bus: Bus, voices: VoiceStore, name: str) -> JobRoute:
    """Which engines can speak the voice: any with that preset, or those that clone. Checked
    against the live engines; with none running the job waits and an engine checks it."""
    engines = bus.directory.engines("tts")
    if any(resolve_voice(name, e.voices) for e in engines):
        return "preset"
    if _clone_name(name) and await voices.get(name) is not None:
        if engines and not any("clone" in e.features for e in engines):
            raise NlsError(
                codes.INVALID_PARAMETER,
                f"'{name}' is a cloned voice and no running TTS engine can clone "
                "(TTS_BACKEND=cosyvoice)",
            )
        return "clone"
    if engines:
        raise NlsError(
            codes.INVALID_PARAMETER,
            f"Unknown voice '{name}': GET /stream/v1/tts/voices lists the voices",
            param="payload.tts_request.voice",
        )
    return "preset"
