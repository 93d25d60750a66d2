"""Application keys shared by the bridge's handlers (no handler imports bridge.app)."""

from __future__ import annotations

from aiohttp import web

from bridge.lifecycle import Live
from bridge.routes import ROUTES
from bus.client import Bus
from funspeech.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
BUS = web.AppKey("bus", Bus)
LIVE = web.AppKey("live", Live)  # requests and WebSocket sessions in flight, for the drain

__all__ = ["BUS", "LIVE", "ROUTES", "SETTINGS"]
