"""Callbacks of async TTS jobs: POST the NLS result to the job's notify_url when it ends.

Engines queue a finished job's id on `<prefix>.jobs.tts.notify`; every bridge pulls from one
shared JetStream consumer, so exactly one bridge delivers each callback. A failed attempt (no
2xx within TTS_ASYNC_NOTIFY_TIMEOUT) is retried after TTS_ASYNC_NOTIFY_BACKOFF seconds, doubling
(at most 10 minutes), TTS_ASYNC_NOTIFY_ATTEMPTS times in all; then it is given up and logged.
A delivered callback is marked in the job, so a redelivered message does not call twice.

Targets must be public hosts unless TTS_ASYNC_ALLOW_PRIVATE_NOTIFY (the SSRF guard of
bridge/fetch.py): checked at submit (names resolved) and again at every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
import uuid
from typing import Any

import aiohttp
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from yarl import URL

from bridge.envelope import dumps, http_status
from bridge.errors import NlsError
from bridge.fetch import guarded_connector, public_address
from bridge.tts_async_links import audio_address
from bridge.tts_async_models import answer
from bus import codes
from bus.jobs import JobStore, keep_alive
from bus.schemas import JobSentence, TtsJob
from funspeech.settings import Settings

log = logging.getLogger("funspeech.bridge.notify")

RESOLVE_TIMEOUT_S = 5.0
MAX_BACKOFF_S = 600.0
PARALLEL = 8  # callbacks one bridge makes at once
FETCH_WAIT_S = 5.0


class NotifyFailed(Exception):
    pass


def _bad(message: str) -> NlsError:
    return NlsError(codes.INVALID_PARAMETER, message, param="payload.notify_url")


def _literal_refused(host: str) -> bool | None:
    """For an IP literal: whether the guard refuses it; None for a host name."""
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None
    return not public_address(host)


async def check_notify_url(address: str, settings: Settings) -> str:
    """An http(s) URL to a public host (resolved now), or NlsError 40000003 saying why."""
    try:
        url = URL(address)
    except ValueError:
        raise _bad("notify_url is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise _bad("notify_url must be an http(s) URL")
    if settings.tts_async_allow_private_notify:
        return address
    host = url.host
    refused = _literal_refused(host)
    if refused is None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                infos = await loop.getaddrinfo(host, url.port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError):
            raise _bad(f"notify_url: cannot resolve the host {host}") from None
        refused = any(not public_address(str(info[4][0])) for info in infos)
    if refused:
        raise _bad(
            f"notify_url refused: {host} is not a public address (a deployment that calls back "
            "into its own network sets TTS_ASYNC_ALLOW_PRIVATE_NOTIFY=true)"
        )
    return address


def callback_body(
    job: TtsJob, settings: Settings, sentences: list[JobSentence] | None = None
) -> dict[str, Any]:
    """Success: the poll's answer. Failure: NLS's error shape with the job's code, and the
    task id in `data` (an extension: FunSpeech's has none)."""
    if job.status == "SUCCESS":
        base = settings.public_url or job.public_url
        address = audio_address(base, job.task_id, job.params.format, settings)
        return answer(job, address, sentences)
    return {
        "error_message": job.error_message,
        "error_code": job.error_code,
        "request_id": uuid.uuid4().hex,
        "url": job.notify_url,
        "status": http_status(job.error_code),
        "data": {"task_id": job.task_id},
    }


async def post(address: str, body: dict[str, Any], settings: Settings) -> None:
    """One attempt; NotifyFailed unless the target answers 2xx."""
    guard = not settings.tts_async_allow_private_notify
    url = URL(address)
    if url.scheme not in ("http", "https") or not url.host:
        raise NotifyFailed("not an http(s) URL")
    if guard and _literal_refused(url.host):
        raise NotifyFailed(f"{url.host} is not a public address")
    timeout = aiohttp.ClientTimeout(total=settings.tts_async_notify_timeout)
    headers = {"Content-Type": "application/json", "User-Agent": "FunSpeech-notify"}
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, connector=guarded_connector(guard)) as http,
            http.post(url, data=dumps(body).encode(), headers=headers, allow_redirects=False) as r,
        ):
            if not 200 <= r.status < 300:
                raise NotifyFailed(f"HTTP {r.status}")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
        if isinstance(exc, TimeoutError):
            cause = f"no answer within {settings.tts_async_notify_timeout:g} s"
        raise NotifyFailed(str(cause) or type(exc).__name__) from None


class Notifier:
    """One bridge's share of the callbacks."""

    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.slots = asyncio.Semaphore(PARALLEL)
        self._running: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        sub = None
        failures = 0
        try:
            while True:
                await self.slots.acquire()
                msgs: list[Msg] = []
                try:
                    if sub is None:
                        if failures:
                            await self.store.ensure()
                        sub = await self.store.notify_subscription()
                    msgs = await sub.fetch(1, timeout=FETCH_WAIT_S)
                    failures = 0
                except (NatsTimeout, TimeoutError):
                    pass
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the bus is away: try again
                    failures += 1
                    level = logging.WARNING if failures == 1 else logging.DEBUG
                    log.log(level, "callbacks: cannot fetch (%s); retrying", exc or repr(exc))
                    if failures % 5 == 0 and sub is not None:
                        with contextlib.suppress(Exception):
                            await sub.unsubscribe()
                        sub = None
                    await asyncio.sleep(min(failures, 5))
                if not msgs:
                    self.slots.release()
                for msg in msgs:
                    task = asyncio.create_task(self._deliver(msg))
                    self._running.add(task)
                    task.add_done_callback(self._done)
        finally:
            for task in list(self._running):
                task.cancel()
            if sub is not None:  # unsubscribe, never drain: see engines/tts_jobs.py
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self.slots.release()

    async def _deliver(self, msg: Msg) -> None:
        task_id = msg.data.decode(errors="replace")
        attempt = msg.metadata.num_delivered
        alive = asyncio.create_task(keep_alive(msg))
        try:
            job = await self.store.get(task_id)
            if job is None or not job.notify_url or job.notified_at:
                await msg.ack()  # expired, or delivered before this bridge's ack was lost
                return
            sentences = None
            if job.status == "SUCCESS" and job.params.enable_subtitle:
                sentences = await self.store.sentences(task_id)
            body = callback_body(job, self.settings, sentences)
            try:
                await post(job.notify_url, body, self.settings)
            except NotifyFailed as exc:
                await self._failed(msg, job, attempt, str(exc))
                return
            await self._mark(task_id, time.time(), "")
            await msg.ack()
            log.info("job %s: callback delivered to %s (try %d)", task_id, job.notify_url, attempt)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception as exc:  # the bus: JetStream hands it out again
            log.warning("job %s: callback not handled (%r); retrying", task_id, exc)
            with contextlib.suppress(Exception):
                await msg.nak(delay=1.0)
        finally:
            alive.cancel()

    async def _failed(self, msg: Msg, job: TtsJob, attempt: int, reason: str) -> None:
        await self._mark(job.task_id, 0.0, reason)
        attempts = self.settings.tts_async_notify_attempts
        if attempt >= attempts:
            log.warning(
                "job %s: giving up the callback to %s after %d tries: %s",
                job.task_id,
                job.notify_url,
                attempt,
                reason,
            )
            await msg.term()
            return
        delay = min(self.settings.tts_async_notify_backoff * 2 ** (attempt - 1), MAX_BACKOFF_S)
        log.info(
            "job %s: callback to %s failed (%s); try %d of %d in %g s",
            job.task_id,
            job.notify_url,
            reason,
            attempt + 1,
            attempts,
            delay,
        )
        await msg.nak(delay=delay)

    async def _mark(self, task_id: str, delivered_at: float, error: str) -> None:
        def change(state: TtsJob) -> bool:
            state.notified_at = delivered_at or state.notified_at
            state.notify_error = error
            return True

        await self.store.update(task_id, change)
