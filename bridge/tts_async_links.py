"""Links to async TTS results: absolute, and signed when auth is on.

`audio_address` is `<base>/rest/v1/tts/async/audio/<task_id>.<format>`, the base being
PUBLIC_URL or the scheme and host the client used. With APPTOKEN or APPKEY set the link carries
`expires` and `signature` (HMAC-SHA256 of `<task_id>.<format>:<expires>`), so it can be fetched
without credentials (a browser's <audio>, a download tool) until it expires; every bridge checks
it with the same secret: TTS_ASYNC_LINK_SECRET, else one derived from APPTOKEN (or APPKEY).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from aiohttp import web

from funspeech.settings import Settings

AUDIO_PATH = "/rest/v1/tts/async/audio"


def base_url(request: web.Request, settings: Settings) -> str:
    """The service's external base URL as this client sees it."""
    if settings.public_url:
        return settings.public_url
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip()
    host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
    return f"{proto or request.scheme}://{host or request.host}"


def secret(settings: Settings) -> bytes | None:
    """The signing key; None while auth is off (downloads then need nothing)."""
    shared = settings.apptoken or settings.appkey
    if shared is None:
        return None
    if settings.tts_async_link_secret:
        return settings.tts_async_link_secret.encode()
    return hmac.new(shared.encode(), b"funspeech async audio links", hashlib.sha256).digest()


def _sign(key: bytes, name: str, expires: int) -> str:
    return hmac.new(key, f"{name}:{expires}".encode(), hashlib.sha256).hexdigest()


def audio_address(base: str, task_id: str, fmt: str, settings: Settings) -> str:
    name = f"{task_id}.{fmt}"
    url = f"{base}{AUDIO_PATH}/{name}"
    key = secret(settings)
    if key is None:
        return url
    expires = int(time.time() + settings.tts_async_link_ttl)
    return f"{url}?expires={expires}&signature={_sign(key, name, expires)}"


def signed(name: str, expires: int | None, signature: str | None, settings: Settings) -> bool:
    """A valid, unexpired signature for the file `name`."""
    key = secret(settings)
    if key is None or expires is None or not signature or expires < time.time():
        return False
    return hmac.compare_digest(signature.lower(), _sign(key, name, expires))
