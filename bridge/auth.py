"""Static APPTOKEN / APPKEY checks. An unset (or empty) setting turns its check off; a failed
check raises NlsError 40000001 (HTTP 401)."""

from __future__ import annotations

import hmac

from bridge.errors import NlsError
from bus.codes import AUTH_FAILED
from funspeech.settings import Settings


def denied(message: str) -> NlsError:
    return NlsError(AUTH_FAILED, message, openai_code="invalid_api_key")


def mask(secret: str) -> str:
    if len(secret) <= 8:
        return "*" * len(secret)
    return f"{secret[:4]}{'*' * (len(secret) - 8)}{secret[-4:]}"


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def check_token(settings: Settings, token: str | None, source: str = "X-NLS-Token header") -> None:
    if settings.apptoken is None:
        return
    if not token:
        raise denied(f"Gateway:ACCESS_DENIED:Missing token ({source})")
    if not _same(token, settings.apptoken):
        raise denied(f"Gateway:ACCESS_DENIED:The token '{mask(token)}' is invalid!")


def check_appkey(settings: Settings, appkey: str | None) -> None:
    if settings.appkey is None:
        return
    if not appkey:
        raise denied("Gateway:ACCESS_DENIED:Missing appkey")
    if not _same(appkey, settings.appkey):
        raise denied(f"Gateway:ACCESS_DENIED:The appkey '{mask(appkey)}' is invalid!")


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None
