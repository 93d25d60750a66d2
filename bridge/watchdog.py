"""A per-connection idle deadline for WebSocket sessions that only progress moves (ASR: audio;
TTS: text). aiohttp's `receive(timeout=)` starts its wait afresh after every ping frame, and
0 means no timeout at all, so a client that only pings would never be idle; here the wait is
bounded by an absolute deadline (`asyncio.timeout_at`) that pings do not move."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import WSMessage, web


class Deadline:
    def __init__(self, seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        self.at = self._loop.time() + seconds
        self._waiting: asyncio.Timeout | None = None

    def reset(self, seconds: float) -> None:
        """Progress: the connection may now wait `seconds` more (a wait in progress too, so
        progress the server makes, e.g. TTS audio going out, can move it)."""
        self.at = self._loop.time() + seconds
        if self._waiting is not None:
            with contextlib.suppress(RuntimeError):  # it has just expired
                self._waiting.reschedule(self.at)

    async def receive(self, ws: web.WebSocketResponse) -> WSMessage:
        """The next data or close frame; TimeoutError once the deadline has passed."""
        async with asyncio.timeout_at(self.at) as waiting:
            self._waiting = waiting
            try:
                return await ws.receive()
            finally:
                self._waiting = None
