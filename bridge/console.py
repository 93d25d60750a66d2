"""The web console: plain HTML/CSS/JS modules under bridge/static/console/, served at
`/console/` by the bridge (no build step, no CDN: every asset comes from here). The page talks to
the same public APIs as any client (NLS WebSocket and REST, OpenAI audio), relative to its own
URL, so it also works behind a reverse proxy that mounts the bridge under a path prefix.

Settings: CONSOLE_ENABLED (serve it at all) and CONSOLE_REDIRECT_ROOT (a browser's `GET /`, one
that accepts text/html, is redirected to the console; API clients keep getting the JSON service
description there)."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from aiohttp import web

from funspeech.settings import Settings

STATIC = Path(__file__).resolve().parent / "static" / "console"

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}

# The page may only load what this bridge serves (its WebSocket included: 'self' covers ws: and
# wss: to this host); media may also come from blob: URLs, audio the page assembled itself.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'"
)
HEADERS = {
    "Cache-Control": "no-cache",  # revalidated on every load: an upgrade is seen at once
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _file(name: str) -> Path | None:
    """The static file a request names, or None: never a path outside STATIC."""
    path = (STATIC / name).resolve()
    if not path.is_relative_to(STATIC) or not path.is_file():
        return None
    return path


async def page_redirect(request: web.Request) -> web.Response:
    """The web console (redirects to /console/)"""
    # relative, so a path prefix added by a reverse proxy is kept
    raise web.HTTPFound("console/")


async def asset(request: web.Request) -> web.StreamResponse:
    """The web console: its page and its static assets"""
    name = request.match_info.get("name") or "index.html"
    path = _file(name)
    if path is None:
        raise web.HTTPNotFound(text=f"no console file {name!r}")
    ctype = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    headers = dict(HEADERS)
    if ctype:
        headers["Content-Type"] = ctype
    if path.suffix == ".html":
        headers["Content-Security-Policy"] = CSP
    return web.FileResponse(path, headers=headers)


def wants_html(request: web.Request) -> bool:
    """A browser navigating to the page: text/html is accepted explicitly (curl, SDKs and
    aiohttp send */* and keep the JSON answer)."""
    accept = request.headers.get("Accept", "")
    return any(part.split(";")[0].strip() == "text/html" for part in accept.split(","))


@web.middleware
async def root_redirect(request: web.Request, handler):  # type: ignore[no-untyped-def]
    if request.path == "/" and request.method == "GET" and wants_html(request):
        raise web.HTTPFound("console/")
    return await handler(request)


def setup(app: web.Application, settings: Settings) -> None:
    if not settings.console_enabled:
        return
    app.router.add_get("/console", page_redirect)
    app.router.add_get("/console/", asset)
    app.router.add_get("/console/{name:[A-Za-z0-9_./-]+}", asset)
    if settings.console_redirect_root:
        app.middlewares.append(root_redirect)
