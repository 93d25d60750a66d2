"""ASR steps the handlers share: engine/model checks, reading and decoding audio, and bus
calls, each failing with an NlsError the handler turns into its protocol's error."""

from __future__ import annotations

import asyncio

from aiohttp import web

from bridge import audio
from bridge.errors import NlsError
from bus import codes
from bus.client import AsrSession, Bus, BusError
from bus.schemas import AsrParams, Recognition
from funspeech.settings import Settings

DECODE_TIMEOUT_S = 120.0


async def check_model(bus: Bus, model: str | None, wait: float) -> None:
    """No engine within `wait` s -> 503; a model no live engine serves -> 40000003."""
    if not bus.directory.has_engines():
        try:
            await bus.directory.wait_for(1, timeout=wait, task="asr")
        except TimeoutError:
            raise NlsError(codes.SERVER_ERROR, "No ASR engine is running", http=503) from None
    known = bus.directory.model_ids()
    if model and model not in known:
        raise NlsError(
            codes.INVALID_PARAMETER,
            f"Unknown model '{model}', available models: {', '.join(sorted(known))}",
            param="model",
        )


async def read_body(request: web.Request, settings: Settings) -> bytes:
    """The whole request body, bounded by MAX_AUDIO_SIZE and HTTP_BODY_TIMEOUT."""
    try:
        async with asyncio.timeout(settings.http_body_timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_big(settings.max_audio_size) from None
    except TimeoutError:
        raise body_timeout(settings) from None


def too_big(limit: int, what: str = "Audio data", param: str | None = None) -> NlsError:
    message = f"{what} exceeds the {limit} byte limit"
    return NlsError(codes.INVALID_MESSAGE, message, http=413, param=param)


def body_timeout(settings: Settings) -> NlsError:
    return NlsError(
        codes.INVALID_MESSAGE,
        f"Request body not received within {settings.http_body_timeout:g} s",
        http=408,
    )


async def decode_audio(
    data: bytes, fmt: str | None, rate: int, max_duration_s: float | None
) -> audio.Pcm:
    """Decode off the event loop; AudioError -> 40000002, too long -> 40000003."""
    try:
        async with asyncio.timeout(DECODE_TIMEOUT_S):
            return await asyncio.to_thread(audio.decode, data, fmt, rate, max_duration_s)
    except audio.AudioTooLong as exc:
        raise NlsError(codes.INVALID_PARAMETER, exc.message, param="file") from None
    except audio.AudioError as exc:
        raise NlsError(
            codes.INVALID_MESSAGE, exc.message, param="file", openai_code="invalid_file"
        ) from None
    except TimeoutError:
        raise NlsError(codes.SERVER_ERROR, "Audio decoding timed out") from None


async def recognize(
    bus: Bus, pcm: audio.Pcm, params: AsrParams, settings: Settings, timeout: float
) -> Recognition:
    """One-shot recognition on the bus."""
    try:
        return await bus.recognize(
            pcm.data,
            params,
            sample_rate=pcm.sample_rate,
            timeout=timeout,
            open_timeout=settings.asr_open_timeout,
        )
    except BusError as exc:
        raise NlsError.from_bus(exc, bus) from None


async def open_session(
    bus: Bus, params: AsrParams, sample_rate: int, settings: Settings, mode: str = "stream"
) -> AsrSession:
    """A bus session on an engine with room."""
    try:
        return await bus.open_asr(
            params, sample_rate=sample_rate, mode=mode, timeout=settings.asr_open_timeout
        )
    except BusError as exc:
        raise NlsError.from_bus(exc, bus) from None
