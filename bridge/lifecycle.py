"""Graceful stop. The bridge counts the requests in flight (WebSocket sessions included) and
keeps its WebSocket sessions; on SIGTERM it stops listening, lets them finish for up to
BRIDGE_DRAIN_TIMEOUT s while new requests on open connections get 503, then ends the
sessions that are left with a protocol error and close code GOING_AWAY (1001)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Protocol

log = logging.getLogger("funspeech.bridge")

SHUTTING_DOWN = "Server is shutting down, reconnect"


class Session(Protocol):
    """A live WebSocket session the drain can end."""

    async def going_away(self) -> None:
        """Tell the client the server is shutting down and close with GOING_AWAY."""


class Live:
    def __init__(self) -> None:
        self.requests = 0
        self.sessions: weakref.WeakSet[Session] = weakref.WeakSet()  # type: ignore[type-var]
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.requests += 1
        self._idle.clear()

    def leave(self) -> None:
        self.requests -= 1
        if self.requests <= 0:
            self._idle.set()

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` s for what is in flight, then end the sessions left."""
        self.draining = True
        if self.requests:
            count, sessions = self.requests, len(self.sessions)
            log.info("draining %d requests (%d sessions), up to %g s", count, sessions, timeout)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        left = list(self.sessions)
        if left:
            log.info("drain timeout: ending %d sessions", len(left))
            await asyncio.gather(*(s.going_away() for s in left), return_exceptions=True)
        if self.requests:
            log.info("%d requests still running are cancelled", self.requests)
