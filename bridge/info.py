"""Service information from live engine state: `GET /`, `/health` (load balancers, no auth),
`/stream/v1/asr/health` and `/stream/v1/asr/models` (X-NLS-Token)."""

from __future__ import annotations

import importlib.metadata
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from bridge.auth import check_token
from bridge.envelope import NlsEnvelope, new_task_id
from bridge.errors import NlsError, rest_response
from bridge.keys import BUS, LIVE, SETTINGS
from bridge.routes import RouteSpec, json_answer, register
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


PROBES = ("/health", "/health/live")  # answered while the bridge drains too


def readiness(request: web.Request) -> tuple[str, str]:
    """(status, reason): "ok"; "unavailable" (stopping, no NATS); "degraded" (a task of
    HEALTH_TASKS has no live engine)."""
    bus = request.app[BUS]
    if request.app[LIVE].draining:
        return "unavailable", "The bridge is shutting down"
    if not bus.nc.is_connected:
        return "unavailable", "The bridge is not connected to NATS"
    required = request.app[SETTINGS].required_tasks()
    missing = [t for t in required if not bus.directory.has_engines(t)]
    if missing:
        return "degraded", f"No {' or '.join(t.upper() for t in missing)} engine is live"
    return "ok", ""


async def health(request: web.Request) -> web.Response:
    """Readiness: 200 while this bridge is connected to NATS and every task of HEALTH_TASKS has
    a live engine, else 503 with the reason."""
    bus = request.app[BUS]
    status, reason = readiness(request)
    body = {
        "status": status,
        "reason": reason,
        "version": VERSION,
        "nats_connected": bus.nc.is_connected and not request.app[LIVE].draining,
        "engines": len(bus.directory.engines()),
        "tasks": {task: len(bus.directory.engines(task)) for task in ("asr", "tts")},
    }
    return web.json_response(body, status=200 if status == "ok" else 503)


async def live(request: web.Request) -> web.Response:
    """Liveness: the process answers (whatever NATS and the engines do)."""
    return web.json_response({"status": "alive", "version": VERSION})


def _authorized(request: web.Request) -> web.Response | None:
    try:
        check_token(request.app[SETTINGS], request.headers.get("X-NLS-Token"))
    except NlsError as exc:
        return rest_response(exc, new_task_id())
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


def engine_mode(engines: list[EngineInfo]) -> str:
    """The model mode the engines report (ASR_MODEL_MODE of each engine; joined if they
    differ, "" without engines)."""
    return ",".join(sorted({e.mode for e in engines}))


def health_status(
    connected: bool, engines: list[EngineInfo], label: str = "ASR"
) -> tuple[str, str]:
    """Status and message of a task's service from its live engines (label: "ASR" or "TTS")."""
    if not connected:
        return "unhealthy", "The bridge is not connected to NATS"
    if not engines:
        return "unhealthy", f"No {label} engine is running"
    serving = [e for e in engines if not e.draining]
    if not serving:
        return "degraded", f"Every {label} engine is draining"
    if all(e.active >= e.capacity for e in serving):
        return "degraded", f"Every {label} engine is at capacity"
    if len(serving) < len(engines):
        return "degraded", f"Some {label} engines are draining"
    return "healthy", f"{label} service is running normally"


async def asr_health(request: web.Request) -> web.Response:
    if (denied := _authorized(request)) is not None:
        return denied
    bus = request.app[BUS]
    engines = bus.directory.engines("asr")
    status, message = health_status(bus.nc.is_connected, engines)
    return web.json_response(
        {
            "status": status,
            "model_loaded": bool(engines),
            "device": ",".join(sorted({e.device for e in engines})),
            "version": VERSION,
            "message": message,
            "loaded_models": sorted({m.id for e in engines for m in e.models}),
            "asr_model_mode": engine_mode(engines),
            "engines": [_engine(e) for e in engines],
        }
    )


async def asr_models(request: web.Request) -> web.Response:
    if (denied := _authorized(request)) is not None:
        return denied
    engines = request.app[BUS].directory.engines("asr")
    mode = engine_mode(engines)
    models: dict[str, dict[str, Any]] = {}
    for engine in engines:
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
                    "asr_model_mode": engine.mode,
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


# ---- route specs
class Service(BaseModel):
    message: str
    version: str
    description: str
    endpoints: dict[str, str]


class Health(BaseModel):
    status: str  # ok | degraded | unavailable
    reason: str
    version: str
    nats_connected: bool
    engines: int
    tasks: dict[str, int]  # live engines per task


class Liveness(BaseModel):
    status: str
    version: str


class EngineState(BaseModel):
    id: str
    device: str
    backend: str
    host: str
    capacity: int
    active: int
    draining: bool
    models: list[str]
    version: str


class AsrHealth(BaseModel):
    status: str
    model_loaded: bool
    device: str
    version: str
    message: str
    loaded_models: list[str]
    asr_model_mode: str
    engines: list[EngineState]


class ModelPath(BaseModel):
    path: str
    exists: bool


class AsrModel(BaseModel):
    id: str
    name: str
    engine: str
    description: str
    languages: list[str]
    default: bool
    loaded: bool
    supports_realtime: bool
    offline_model: ModelPath
    realtime_model: ModelPath | None
    asr_model_mode: str
    engines: list[str]


class AsrModels(BaseModel):
    models: list[AsrModel]
    total: int
    loaded_count: int
    asr_model_mode: str


DENIED = json_answer("Token missing or wrong (40000001)", NlsEnvelope)
SPECS = [
    RouteSpec("GET", "/", root, "Service information", answers={200: json_answer("OK", Service)}),
    RouteSpec(
        "GET",
        "/health",
        health,
        "Readiness (load balancers)",
        "No auth. 200 while the bridge is connected to NATS and every task of HEALTH_TASKS has "
        "a live engine; else 503 with `status` degraded (no engine of a task) or unavailable "
        "(no NATS, shutting down) and the `reason`.",
        answers={
            200: json_answer("Ready", Health),
            503: json_answer("Not ready: degraded or unavailable", Health),
        },
    ),
    RouteSpec(
        "GET",
        "/health/live",
        live,
        "Liveness",
        "No auth. 200 whenever the process answers, also while it drains.",
        answers={200: json_answer("Alive", Liveness)},
    ),
    RouteSpec(
        "GET",
        "/stream/v1/asr/health",
        asr_health,
        "ASR health from live engines",
        "status healthy / degraded / unhealthy, always HTTP 200.",
        auth="nls",
        answers={200: json_answer("Health", AsrHealth), 401: DENIED},
        tags=("NLS",),
    ),
    RouteSpec(
        "GET",
        "/stream/v1/asr/models",
        asr_models,
        "Models served by live engines",
        auth="nls",
        answers={200: json_answer("Models", AsrModels), 401: DENIED},
        tags=("NLS",),
    ),
]


def setup(app: web.Application) -> None:
    register(app, SPECS)
