"""CORS: browsers may call the API from the origins in CORS_ALLOW_ORIGINS only (default none).
`*` allows any origin, and then never with credentials (cookies, HTTP auth)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from funspeech.settings import Settings

METHODS = "GET, POST, OPTIONS"
EXPOSED = "task_id, X-Request-ID"
MAX_AGE_S = "600"


def middleware(settings: Settings) -> Middleware:
    origins = settings.cors_origins()
    anyone = "*" in origins
    credentials = settings.cors_allow_credentials and not anyone

    def allowed(origin: str | None) -> str | None:
        """The Access-Control-Allow-Origin value for this origin, None when refused."""
        if not origin or not origins:
            return None
        if anyone:
            return "*"
        return origin if origin in origins else None

    def decorate(response: web.StreamResponse, allow: str) -> None:
        response.headers["Access-Control-Allow-Origin"] = allow
        if credentials:
            response.headers["Access-Control-Allow-Credentials"] = "true"

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allow = allowed(origin)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if allow is None:
                return web.Response(status=403, text="CORS: origin not allowed")
            response = web.Response(status=204)
            decorate(response, allow)
            response.headers["Access-Control-Allow-Methods"] = METHODS
            asked = request.headers.get("Access-Control-Request-Headers")
            if asked:
                response.headers["Access-Control-Allow-Headers"] = asked
            response.headers["Access-Control-Max-Age"] = MAX_AGE_S
            response.headers["Vary"] = "Origin"
            return response
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # 404, 405... are responses too
            answer(exc, allow)
            raise
        answer(response, allow)
        return response

    def answer(response: web.StreamResponse, allow: str | None) -> None:
        if response.prepared:
            return
        if origins and not anyone:
            response.headers.add("Vary", "Origin")
        if allow is not None:
            decorate(response, allow)
            response.headers["Access-Control-Expose-Headers"] = EXPOSED

    return cors
