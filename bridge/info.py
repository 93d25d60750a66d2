"""Service information from live engine state: `GET /`, `/health` (load balancers, no auth),
`/stream/v1/asr/health` and `/stream/v1/asr/models` (X-NLS-Token)."""

from __future__ import annotations

import importlib.metadata
from typing import Any

from aiohttp import web

from bridge.app import BUS, SETTINGS
from bridge.auth import AuthError, check_token
from bridge.envelope import new_task_id, nls_response
from bus.schemas import EngineInfo

try:
    VERSION = importlib.metadata.version("funspeech")
except importlib.metadata.PackageNotFoundError:
    VERSION = "1.0.0"

# name -> path, listed by GET / when the path is served by this bridge
ENDPOINTS = {
    "asr": "/stream/v1/asr",
    "asr_models": "/stream/v1/asr/models",
    "asr_health": "/stream/v1/asr/health",
    "asr_websocket": "/ws/v1/asr",
    "nls_websocket": "/ws/v1",
    "tts": "/stream/v1/tts",
    "tts_voices": "/stream/v1/tts/voices",
    "tts_health": "/stream/v1/tts/health",
    "tts_websocket": "/ws/v1/tts",
    "tts_async": "/rest/v1/tts/async",
    "openai_transcriptions": "/v1/audio/transcriptions",
    "openai_speech": "/v1/audio/speech",
    "openai_models": "/v1/models",
    "health": "/health",
    "openapi": "/openapi.json",
    "docs": "/docs",
}


def _served(app: web.Application) -> set[str]:
    return {resource.canonical for resource in app.router.resources()}


async def root(request: web.Request) -> web.Response:
    served = _served(request.app)
    return web.json_response(
        {
            "message": "FunSpeech API Server",
            "version": VERSION,
            "description": "Self-hosted speech recognition and synthesis, wire-compatible with "
            "Alibaba Cloud NLS and the OpenAI audio API",
            "endpoints": {name: path for name, path in ENDPOINTS.items() if path in served},
        }
    )


async def health(request: web.Request) -> web.Response:
    """200 while this bridge runs and reaches NATS (engines may be 0), else 503."""
    bus = request.app[BUS]
    connected = bus.nc.is_connected
    body = {
        "status": "ok" if connected else "unavailable",
        "version": VERSION,
        "nats_connected": connected,
        "engines": len(bus.directory.engines()),
    }
    return web.json_response(body, status=200 if connected else 503)


def _authorized(request: web.Request) -> web.Response | None:
    try:
        check_token(request.app[SETTINGS], request.headers.get("X-NLS-Token"))
    except AuthError as exc:
        return nls_response(new_task_id(), exc.code, exc.message)
    return None


def _engine(e: EngineInfo) -> dict[str, Any]:
    return {
        "id": e.id,
        "device": e.device,
        "backend": e.backend,
        "host": e.host,
        "capacity": e.capacity,
        "active": e.active,
        "draining": e.draining,
        "models": [m.id for m in e.models],
        "version": e.version,
    }


def health_status(connected: bool, engines: list[EngineInfo]) -> tuple[str, str]:
    if not connected:
        return "unhealthy", "The bridge is not connected to NATS"
    if not engines:
        return "unhealthy", "No ASR engine is running"
    serving = [e for e in engines if not e.draining]
    if not serving:
        return "degraded", "Every ASR engine is draining"
    if all(e.active >= e.capacity for e in serving):
        return "degraded", "Every ASR engine is at capacity"
    if len(serving) < len(engines):
        return "degraded", "Some ASR engines are draining"
    return "healthy", "ASR service is running normally"


async def asr_health(request: web.Request) -> web.Response:
    if (denied := _authorized(request)) is not None:
        return denied
    bus, settings = request.app[BUS], request.app[SETTINGS]
    engines = bus.directory.engines()
    status, message = health_status(bus.nc.is_connected, engines)
    return web.json_response(
        {
            "status": status,
            "model_loaded": bool(engines),
            "device": ",".join(sorted({e.device for e in engines})),
            "version": VERSION,
            "message": message,
            "loaded_models": sorted({m.id for e in engines for m in e.models}),
            "asr_model_mode": settings.asr_model_mode,
            "engines": [_engine(e) for e in engines],
        }
    )


async def asr_models(request: web.Request) -> web.Response:
    if (denied := _authorized(request)) is not None:
        return denied
    mode = request.app[SETTINGS].asr_model_mode
    models: dict[str, dict[str, Any]] = {}
    for engine in request.app[BUS].directory.engines():
        for m in engine.models:
            entry = models.get(m.id)
            if entry is None:
                offline = m.offline_path or m.id
                realtime = (m.realtime_path or offline) if m.supports_realtime else None
                entry = models[m.id] = {
                    "id": m.id,
                    "name": m.name,
                    "engine": engine.backend,
                    "description": m.description,
                    "languages": m.languages,
                    "default": m.default,
                    "loaded": True,
                    "supports_realtime": m.supports_realtime,
                    "offline_model": {"path": offline, "exists": True},
                    "realtime_model": {"path": realtime, "exists": True} if realtime else None,
                    "asr_model_mode": mode,
                    "engines": [],
                }
            entry["engines"].append(engine.id)
    listed = list(models.values())
    return web.json_response(
        {
            "models": listed,
            "total": len(listed),
            "loaded_count": len(listed),
            "asr_model_mode": mode,
        }
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/", root)
    app.router.add_get("/health", health)
    app.router.add_get("/stream/v1/asr/health", asr_health)
    app.router.add_get("/stream/v1/asr/models", asr_models)
