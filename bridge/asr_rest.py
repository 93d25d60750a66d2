"""One-shot ASR REST, NLS "一句话识别": `POST /stream/v1/asr`.

Audio in the body (or `audio_address`), parameters in the query, `X-NLS-Token` + `appkey`.
Answers the NLS envelope; the HTTP status follows envelope.http_status (docs/rest-api.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from bridge import audio
from bridge.app import BUS, SETTINGS
from bridge.auth import AuthError, check_appkey, check_token
from bridge.envelope import NlsError, new_task_id, nls_response
from bus import codes
from bus.client import Bus, BusError, Transcript
from bus.schemas import AsrParams
from bus.text import join_texts
from funspeech.settings import Settings

log = logging.getLogger("funspeech.bridge.asr")

DECODE_TIMEOUT_S = 120.0
MAX_REDIRECTS = 5
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


# ---- parameters
def parse_bool(query: Mapping[str, str], key: str, default: bool = False) -> bool:
    value = query.get(key)
    if value is None:
        return default
    if value.strip().lower() in TRUE:
        return True
    if value.strip().lower() in FALSE:
        return False
    raise NlsError(codes.INVALID_PARAMETER, f"Invalid parameter {key}: {value!r} is not a boolean")


def parse_rate(value: str | None) -> int:
    if value is None or value == "":
        return 16000
    try:
        rate = int(value)
    except ValueError:
        raise NlsError(codes.INVALID_PARAMETER, f"Invalid sample_rate {value!r}") from None
    if not audio.MIN_RATE <= rate <= audio.MAX_RATE:
        raise NlsError(
            codes.UNSUPPORTED_SAMPLE_RATE,
            f"Unsupported sample_rate {rate}: use 8000..48000 Hz (8000, 16000 recommended)",
        )
    return rate


async def check_model(bus: Bus, model: str | None, wait: float) -> None:
    """No engine within `wait` s -> 503; a model no live engine serves -> 40000003."""
    if not bus.directory.has_engines():
        try:
            await bus.directory.wait_for(1, timeout=wait)
        except TimeoutError:
            raise NlsError(codes.SERVER_ERROR, "No ASR engine is running", http=503) from None
    known = bus.directory.model_ids()
    if model and model not in known:
        raise NlsError(
            codes.INVALID_PARAMETER,
            f"Unknown model '{model}', available models: {', '.join(sorted(known))}",
        )


def params_from(query: Mapping[str, str]) -> tuple[AsrParams, str, int]:
    fmt = (query.get("format") or "pcm").strip().lower()
    if fmt not in audio.FORMATS:
        raise NlsError(
            codes.INVALID_PARAMETER,
            f"Unsupported format '{fmt}': use one of {', '.join(audio.FORMATS)}",
        )
    rate = parse_rate(query.get("sample_rate"))
    hotwords = [w.strip() for w in (query.get("hotwords") or "").split(",") if w.strip()]
    parse_bool(query, "disfluency")  # accepted (validated), no effect
    params = AsrParams(
        model=query.get("customization_id") or None,
        language=query.get("language") or query.get("dolphin_lang_sym") or None,
        enable_punctuation=parse_bool(query, "enable_punctuation_prediction"),
        enable_itn=parse_bool(query, "enable_inverse_text_normalization"),
        enable_voice_detection=parse_bool(query, "enable_voice_detection"),
        enable_words=parse_bool(query, "enable_words"),
        enable_intermediate_result=False,
        hotwords=hotwords,
    )
    return params, fmt, rate


# ---- audio in
async def read_body(request: web.Request, settings: Settings) -> bytes:
    try:
        async with asyncio.timeout(settings.http_body_timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise NlsError(
            codes.INVALID_MESSAGE,
            f"Audio data exceeds the {settings.max_audio_size} byte limit",
            http=413,
        ) from None
    except TimeoutError:
        raise NlsError(
            codes.INVALID_MESSAGE,
            f"Request body not received within {settings.http_body_timeout:g} s",
            http=408,
        ) from None


def _refused(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


class _GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default and refuses hosts with a non-public address (SSRF)."""

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if _refused(result["host"]):
                raise _Refused(host, result["host"])
        return results

    async def close(self) -> None:
        await self._inner.close()


class _Refused(OSError):
    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"host {host} resolves to the non-public address {address}")


def _check_url(url: URL, guard: bool) -> None:
    if url.scheme not in ("http", "https") or not url.host:
        raise NlsError(codes.INVALID_PARAMETER, "audio_address must be an http(s) URL")
    if guard:
        try:
            refused = _refused(url.host)
        except ValueError:
            return  # a host name: the resolver checks what it resolves to
        if refused:
            raise NlsError(
                codes.INVALID_PARAMETER,
                f"audio_address refused: {url.host} is not a public address",
            )


async def download(address: str, settings: Settings) -> bytes:
    """GET an audio_address: http(s) only, bounded in time and size, public hosts only unless
    ASR_ALLOW_PRIVATE_AUDIO_ADDRESS; redirects are followed and checked hop by hop."""
    guard = not settings.asr_allow_private_audio_address
    try:
        url = URL(address)
    except ValueError:
        raise NlsError(codes.INVALID_PARAMETER, "audio_address is not a valid URL") from None
    limit = settings.max_audio_size
    timeout = aiohttp.ClientTimeout(total=settings.audio_download_timeout)
    connector = aiohttp.TCPConnector(resolver=_GuardedResolver() if guard else None)
    try:
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            for _ in range(MAX_REDIRECTS + 1):
                _check_url(url, guard)
                async with http.get(url, allow_redirects=False) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                        url = url.join(URL(resp.headers["Location"]))
                        continue
                    if resp.status != 200:
                        raise NlsError(
                            codes.INVALID_PARAMETER,
                            f"Cannot download audio_address: HTTP {resp.status}",
                        )
                    if (resp.content_length or 0) > limit:
                        raise _too_big(limit)
                    data = bytearray()
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        data += chunk
                        if len(data) > limit:
                            raise _too_big(limit)
                    return bytes(data)
            raise NlsError(codes.INVALID_PARAMETER, "audio_address: too many redirects")
    except (aiohttp.ClientError, TimeoutError, _Refused) as exc:
        cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
        if isinstance(cause, _Refused):
            raise NlsError(codes.INVALID_PARAMETER, f"audio_address refused: {cause}") from None
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {settings.audio_download_timeout:g} s"
        raise NlsError(
            codes.INVALID_PARAMETER, f"Cannot download audio_address: {reason}"
        ) from None


def _too_big(limit: int) -> NlsError:
    return NlsError(codes.INVALID_MESSAGE, f"Audio exceeds the {limit} byte limit", http=413)


async def decode_audio(
    data: bytes, fmt: str | None, rate: int, max_duration_s: float | None
) -> audio.Pcm:
    """Decode off the event loop; AudioError -> 40000002, too long -> 40000003."""
    try:
        async with asyncio.timeout(DECODE_TIMEOUT_S):
            return await asyncio.to_thread(audio.decode, data, fmt, rate, max_duration_s)
    except audio.AudioTooLong as exc:
        raise NlsError(codes.INVALID_PARAMETER, exc.message) from None
    except audio.AudioError as exc:
        raise NlsError(codes.INVALID_MESSAGE, exc.message) from None
    except TimeoutError:
        raise NlsError(codes.SERVER_ERROR, "Audio decoding timed out") from None


# ---- recognition
async def recognize(
    bus: Bus, pcm: audio.Pcm, params: AsrParams, settings: Settings, timeout: float
) -> Transcript:
    """bus.recognize with NLS errors; no engine -> 503."""
    try:
        return await bus.recognize(
            pcm.data,
            params,
            sample_rate=pcm.sample_rate,
            timeout=timeout,
            open_timeout=settings.asr_open_timeout,
        )
    except BusError as exc:
        unavailable = exc.code == codes.SERVER_ERROR and not bus.directory.has_engines()
        raise NlsError(exc.code, exc.message, http=503 if unavailable else None) from None


def sentences(transcript: Transcript, words: bool) -> list[dict[str, Any]]:
    out = []
    for seg in transcript.segments:
        item: dict[str, Any] = {
            "text": seg.text.strip(),
            "begin_time": seg.begin_ms,
            "end_time": seg.time_ms,
        }
        if seg.confidence is not None:
            item["confidence"] = round(seg.confidence, 4)
        if words:
            item["words"] = [
                {"text": w.text.strip(), "startTime": w.begin_ms, "endTime": w.end_ms}
                for w in seg.words or []
            ]
        out.append(item)
    return out


async def handle(request: web.Request) -> web.Response:
    task_id = new_task_id()
    started = time.monotonic()
    try:
        response = await _handle(request, task_id)
    except (NlsError, AuthError) as exc:
        http = exc.http if isinstance(exc, NlsError) else 401
        log.info("asr %s failed: %d %s", task_id, exc.code, exc.message)
        return nls_response(task_id, exc.code, exc.message, status=http)
    except Exception as exc:
        log.exception("asr %s: internal error", task_id)
        return nls_response(task_id, codes.SERVER_ERROR, f"Internal server error: {exc}")
    log.info("asr %s done in %.2f s", task_id, time.monotonic() - started)
    return response


async def _handle(request: web.Request, task_id: str) -> web.Response:
    settings, bus = request.app[SETTINGS], request.app[BUS]
    check_token(settings, request.headers.get("X-NLS-Token"))
    check_appkey(settings, request.query.get("appkey"))
    params, fmt, rate = params_from(request.query)
    await check_model(bus, params.model, settings.asr_open_timeout)
    address = request.query.get("audio_address")
    data = await download(address, settings) if address else await read_body(request, settings)
    if not data:
        raise NlsError(codes.INVALID_MESSAGE, "Audio data is empty")
    pcm = await decode_audio(data, fmt, rate, settings.asr_max_duration)
    transcript = await recognize(bus, pcm, params, settings, settings.asr_result_timeout)
    return nls_response(
        task_id,
        codes.SUCCESS,
        "SUCCESS",
        join_texts(s.text for s in transcript.segments),
        sentences=sentences(transcript, params.enable_words),
    )


def setup(app: web.Application) -> None:
    app.router.add_post("/stream/v1/asr", handle)
