"""Download an `audio_address`: http(s) only, bounded in time and size, and public hosts
only unless ASR_ALLOW_PRIVATE_AUDIO_ADDRESS (SSRF guard, checked on every address connected
to, so DNS rebinding and redirects do not get around it)."""

from __future__ import annotations

import ipaddress
import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from bridge.asr_service import too_big
from bridge.errors import NlsError
from bus import codes
from funspeech.settings import Settings

MAX_REDIRECTS = 5


def _refused(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


class _Refused(OSError):
    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"host {host} resolves to the non-public address {address}")


class _GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default and refuses hosts with a non-public address."""

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


def public_address(address: str) -> bool:
    """An IP address the guard lets through (global unicast)."""
    return not _refused(address)


def guarded_connector(guard: bool) -> aiohttp.TCPConnector:
    """A connector that refuses hosts with a non-public address when `guard` is on (shared with
    the async TTS callbacks, bridge/tts_notify.py)."""
    return aiohttp.TCPConnector(resolver=_GuardedResolver() if guard else None)


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
    """GET the address, following (and checking) at most MAX_REDIRECTS redirects."""
    guard = not settings.asr_allow_private_audio_address
    try:
        url = URL(address)
    except ValueError:
        raise NlsError(codes.INVALID_PARAMETER, "audio_address is not a valid URL") from None
    limit = settings.max_audio_size
    timeout = aiohttp.ClientTimeout(total=settings.audio_download_timeout)
    connector = guarded_connector(guard)
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
                        raise too_big(limit, "Audio")
                    data = bytearray()
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        data += chunk
                        if len(data) > limit:
                            raise too_big(limit, "Audio")
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
