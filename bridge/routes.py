"""Declarative route specs: each handler module lists its routes once, with what the OpenAPI
document needs to describe them (parameter and body models, answers, auth)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Schema = type[BaseModel] | dict[str, Any]
JSON = "application/json"


@dataclass(frozen=True)
class Answer:
    """One documented response: media type -> schema (a model or a JSON schema)."""

    description: str
    content: dict[str, Schema] = field(default_factory=dict)


def json_answer(description: str, schema: Schema) -> Answer:
    return Answer(description, {JSON: schema})


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    handler: Handler
    summary: str
    description: str = ""
    query: type[BaseModel] | None = None  # query parameters
    body: dict[str, Schema] | None = None  # request body: media type -> schema
    body_required: bool = False
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)  # required headers
    query_extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # optional, no model
    path_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # `{name}` in path
    frames: tuple[type[BaseModel], ...] = ()  # WebSocket payloads, listed as schemas
    auth: Literal["nls", "bearer"] | None = None  # required when APPTOKEN is set
    appkey: bool = False  # `appkey` query parameter required when APPKEY is set
    answers: dict[int, Answer] = field(default_factory=dict)
    tags: tuple[str, ...] = ()


ROUTES = web.AppKey("routes", list[RouteSpec])  # what the OpenAPI document describes


def register(app: web.Application, specs: list[RouteSpec]) -> None:
    """Add the routes (GET without HEAD: the document lists what is served) and remember
    them for the OpenAPI document."""
    for spec in specs:
        if spec.method == "GET":
            app.router.add_get(spec.path, spec.handler, allow_head=False)
        else:
            app.router.add_route(spec.method, spec.path, spec.handler)
    app[ROUTES].extend(specs)
