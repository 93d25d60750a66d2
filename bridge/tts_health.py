"""`GET /stream/v1/tts/health` (X-NLS-Token): TTS health from the live engines' heartbeats
and the voice store."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from bridge.envelope import dumps
from bridge.errors import NlsError
from bridge.info import VERSION, health_status
from bridge.keys import BUS
from bridge.routes import RouteSpec, json_answer, register
from bridge.voices_api import DENIED, VOICES, can_clone, denied, envelope_answers, presets
from bus.schemas import EngineInfo


def engine_state(e: EngineInfo) -> dict[str, Any]:
    return {
        "id": e.id,
        "device": e.device,
        "backend": e.backend,
        "mode": e.mode,
        "host": e.host,
        "pid": e.pid,
        "capacity": e.capacity,
        "active": e.active,
        "draining": e.draining,
        "features": e.features,
        "sample_rate": e.sample_rate,
        "voices": [v.id for v in e.voices],
        "load": e.load,
        "version": e.version,
    }


async def tts_health(request: web.Request) -> web.Response:
    if (refused := denied(request)) is not None:
        return refused
    bus = request.app[BUS]
    engines = bus.directory.engines("tts")
    status, message = health_status(bus.nc.is_connected, engines, "TTS")
    try:
        await request.app[VOICES].store(bus)
        store = "ok"
    except NlsError as exc:
        store = exc.message
    return web.json_response(
        {
            "status": status,
            "message": message,
            "version": VERSION,
            "sft_model_loaded": any(e.voices for e in engines),
            "tts_model_loaded": can_clone(engines),
            "device": ",".join(sorted({e.device for e in engines})),
            "preset_voices": list(presets(engines)),
            "clone_available": can_clone(engines),
            "voice_store": store,
            "engines": [engine_state(e) for e in engines],
        },
        dumps=dumps,
    )


# ---- route spec
class TtsEngineState(BaseModel):
    id: str
    device: str
    backend: str
    mode: str
    host: str
    pid: int
    capacity: int
    active: int
    draining: bool
    features: list[str]
    sample_rate: int
    voices: list[str]
    load: dict[str, float]
    version: str


class TtsHealth(BaseModel):
    status: str
    message: str
    version: str
    sft_model_loaded: bool
    tts_model_loaded: bool
    device: str
    preset_voices: list[str]
    clone_available: bool
    voice_store: str
    engines: list[TtsEngineState]


SPECS = [
    RouteSpec(
        "GET",
        "/stream/v1/tts/health",
        tts_health,
        "TTS health from live engines",
        "status healthy / degraded / unhealthy, always HTTP 200; one entry per engine.",
        auth="nls",
        answers={200: json_answer("Health", TtsHealth), **envelope_answers(s401=DENIED)},
        tags=("NLS",),
    ),
]


def setup(app: web.Application) -> None:
    register(app, SPECS)
