"""The bridge's aiohttp application: public protocols in, bus traffic out. No models, no
durable state; run as many as you like behind a load balancer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from bus.client import Bus
from funspeech.settings import Settings

log = logging.getLogger("funspeech.bridge")

SETTINGS = web.AppKey("settings", Settings)
BUS = web.AppKey("bus", Bus)


@web.middleware
async def cors(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Browsers call the API from other origins (test pages, web apps): allow them."""
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        response: web.StreamResponse = web.Response()
    else:
        response = await handler(request)
    if not response.prepared:
        response.headers["Access-Control-Allow-Origin"] = request.headers.get("Origin", "*")
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = request.headers.get(
            "Access-Control-Request-Headers", "*"
        )
        response.headers["Access-Control-Expose-Headers"] = "task_id, X-Request-ID"
    return response


def create_app(settings: Settings, bus: Bus | None = None) -> web.Application:
    """Build the app. Without a bus it connects to NATS_URL on start-up and closes on cleanup."""
    from bridge import asr_rest, info, nls_ws, openai_audio, openapi

    app = web.Application(middlewares=[cors], client_max_size=settings.max_audio_size)
    app[SETTINGS] = settings

    async def bus_ctx(app: web.Application) -> AsyncIterator[None]:
        own = bus is None
        app[BUS] = (
            bus if bus is not None else await Bus.connect(settings.nats_url, "funspeech-bridge")
        )
        yield
        if own:
            await app[BUS].close()

    app.cleanup_ctx.append(bus_ctx)
    nls_ws.setup(app)
    asr_rest.setup(app)
    openai_audio.setup(app)
    info.setup(app)
    openapi.setup(app)
    return app
