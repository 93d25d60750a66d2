"""The voices folder: `name.wav` + `name.txt` in VOICES_DIR imported as cloned voices, once
when a bridge starts and on `POST /stream/v1/tts/voices/refresh` (X-NLS-Token). Idempotent by
content; voices are never deleted by an import."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from bridge.envelope import dumps
from bridge.errors import NlsError
from bridge.keys import BUS, SETTINGS
from bridge.routes import RouteSpec, json_answer, register
from bridge.voices_api import (
    DENIED,
    NO_STORE,
    VOICES,
    check_free,
    decode_prompt,
    denied,
    envelope_answers,
    error_response,
    presets,
    wav_bytes,
)
from bus.client import Bus
from bus.schemas import EngineInfo
from bus.voices import VoiceStore, check_name
from funspeech.settings import Settings

log = logging.getLogger("funspeech.bridge.voices")


async def import_folder(bus: Bus, store: VoiceStore, settings: Settings) -> dict[str, Any]:
    """Import `name.wav` + `name.txt` from VOICES_DIR: new and changed voices are stored, the
    same recording and text again changes nothing (by the audio's SHA-256)."""
    folder = Path(settings.voices_dir)
    result: dict[str, Any] = {"imported": [], "unchanged": [], "skipped": []}
    files = await asyncio.to_thread(_wav_files, folder)
    if files is None:
        result["message"] = f"No voices folder at {folder} (VOICES_DIR): nothing to import"
        return result
    engines = bus.directory.engines("tts")
    for wav in files:
        try:
            outcome = await _import_one(store, wav, engines)
        except (NlsError, ValueError, OSError) as exc:
            reason = exc.message if isinstance(exc, NlsError) else str(exc)
            result["skipped"].append({"file": wav.name, "reason": reason})
            continue
        result[outcome].append(wav.stem)
    n = len(result["imported"])
    result["message"] = f"{n} voice(s) imported from {folder}"
    return result


def _wav_files(folder: Path) -> list[Path] | None:
    return sorted(folder.glob("*.wav")) if folder.is_dir() else None


def _read_pair(wav: Path) -> tuple[str, bytes]:
    """The transcript (name.txt) and the recording (name.wav)."""
    txt = wav.with_suffix(".txt")
    if not txt.is_file():
        raise ValueError(f"no transcript {txt.name} beside it")
    text = txt.read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"{txt.name} is empty")
    return text, wav.read_bytes()


async def _import_one(store: VoiceStore, wav: Path, engines: list[EngineInfo]) -> str:
    name = check_name(wav.stem)
    check_free(name, engines)
    text, audio = await asyncio.to_thread(_read_pair, wav)
    pcm = await decode_prompt(audio)
    data = wav_bytes(pcm)
    old = await store.get(name)
    if old is not None:
        if old.audio_sha256 == hashlib.sha256(data).hexdigest() and old.text == text:
            return "unchanged"
        if old.source != "dir":
            raise ValueError(f"a voice '{name}' made through the API exists: not replaced")
    await store.put(name, data, text=text, sample_rate=pcm.sample_rate,
                    duration_ms=round(pcm.duration_s * 1000), source="dir")  # fmt: skip
    log.info("voice %r imported from %s", name, wav)
    return "imported"


async def refresh(request: web.Request) -> web.Response:
    if (refused := denied(request)) is not None:
        return refused
    settings, bus = request.app[SETTINGS], request.app[BUS]
    try:
        store = await request.app[VOICES].store(bus)
        result = await import_folder(bus, store, settings)
    except NlsError as exc:
        return error_response(exc)
    clones = await store.list()
    names = [*presets(bus.directory.engines("tts")), *(r.name for r in clones)]
    return web.json_response({**result, "voices": names, "total": len(names)}, dumps=dumps)


async def import_at_start(app: web.Application) -> AsyncIterator[None]:
    """Import the voices/ folder once when the bridge starts (in the background)."""

    async def run() -> None:
        bus, settings = app[BUS], app[SETTINGS]
        if await asyncio.to_thread(_wav_files, Path(settings.voices_dir)) is None:
            return
        with contextlib.suppress(TimeoutError):  # presets known: names are checked against them
            await bus.directory.wait_for(1, timeout=settings.asr_open_timeout, task="tts")
        try:
            store = await app[VOICES].store(bus)
            result = await import_folder(bus, store, settings)
        except NlsError as exc:
            log.warning("voices folder not imported: %s", exc.message)
            return
        log.info("%s; %d unchanged, %d skipped %s", result["message"], len(result["unchanged"]),
                 len(result["skipped"]), result["skipped"] or "")  # fmt: skip

    task = asyncio.create_task(run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# ---- route spec
class Skipped(BaseModel):
    file: str
    reason: str


class Refreshed(BaseModel):
    message: str
    imported: list[str]
    unchanged: list[str]
    skipped: list[Skipped]
    voices: list[str]
    total: int


SPECS = [
    RouteSpec(
        "POST",
        "/stream/v1/tts/voices/refresh",
        refresh,
        "Import name.wav + name.txt from VOICES_DIR (idempotent)",
        auth="nls",
        answers={
            200: json_answer("Imported, unchanged and skipped files", Refreshed),
            **envelope_answers(s401=DENIED, s503=NO_STORE),
        },
        tags=("NLS",),
    ),
]


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(import_at_start)
    register(app, SPECS)
