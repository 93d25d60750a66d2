"""The bridge's aiohttp application: public protocols in, bus traffic out. No models, no
durable state; run as many as you like behind a load balancer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler

from bridge import (
    asr_rest,
    console,
    cors,
    info,
    metrics,
    nls_ws,
    openai_audio,
    openai_speech,
    openapi,
    tts_async,
    tts_health,
    tts_rest,
    tts_ws,
    voices_api,
    voices_folder,
)
from bridge.envelope import new_task_id
from bridge.errors import NlsError, openai_response, rest_response
from bridge.keys import BUS, LIVE, ROUTES, SETTINGS
from bridge.lifecycle import SHUTTING_DOWN, Live
from bus import codes
from bus.client import Bus
from funspeech.settings import Settings

log = logging.getLogger("funspeech.bridge")


@web.middleware
async def track(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count requests in flight for the drain; while draining, refuse new ones with 503
    (the health probes answer themselves)."""
    live = request.app[LIVE]
    if live.draining and request.path not in info.PROBES:
        exc = NlsError(codes.SERVER_ERROR, SHUTTING_DOWN, http=503)
        if request.path.startswith("/v1/"):
            response = openai_response(exc, new_task_id())
        else:
            response = rest_response(exc, new_task_id())
        response.force_close()
        return response
    live.enter()
    try:
        return await handler(request)
    finally:
        live.leave()


def create_app(settings: Settings, bus: Bus | None = None) -> web.Application:
    """Build the app. Without a bus it connects to NATS_URL on start-up and closes on cleanup."""
    app = web.Application(
        middlewares=[cors.middleware(settings), track], client_max_size=settings.max_audio_size
    )
    app[SETTINGS] = settings
    app[LIVE] = Live()
    app[ROUTES] = []

    async def bus_ctx(app: web.Application) -> AsyncIterator[None]:
        own = bus is None
        app[BUS] = (
            bus
            if bus is not None
            else await Bus.connect(
                settings.nats_url, "funspeech-bridge", settings.funspeech_namespace
            )
        )
        yield
        if own:
            await app[BUS].close()

    app.cleanup_ctx.append(bus_ctx)
    nls_ws.setup(app)
    tts_ws.setup(app)  # after nls_ws: TTS namespaces on its gateway
    asr_rest.setup(app)
    tts_rest.setup(app)
    openai_audio.setup(app)
    openai_speech.setup(app)
    voices_api.setup(app)
    voices_folder.setup(app)
    tts_health.setup(app)
    info.setup(app)
    openapi.setup(app)
    console.setup(app, settings)
    tts_async.setup(app)
    metrics.setup(app, settings)
    return app
