"""OpenAPI 3.1 document of the HTTP surface at `/openapi.json`, rendered as a self-contained
HTML reference at `/docs` (no external assets). Served only when DEBUG=true, else 404.

Built per request from the handlers' route specs (bridge/routes.py), the parameter models
(bridge/params.py) and live state: auth is required only where APPTOKEN / APPKEY are set, and
model and language choices are those of the engines running now.
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web
from pydantic import AliasChoices, BaseModel

from bridge.docs_page import render_html
from bridge.envelope import NlsEnvelope
from bridge.info import VERSION
from bridge.keys import BUS, ROUTES, SETTINGS
from bridge.params import LIVE_ENUM
from bridge.routes import Answer, RouteSpec, Schema, json_answer, register
from bus.client import Bus
from funspeech.settings import Settings

REF = "#/components/schemas/{model}"
STOPPING = "The bridge is shutting down (50000000)"
SCHEMES = {
    "nlsToken": {"type": "apiKey", "in": "header", "name": "X-NLS-Token"},
    "appkey": {"type": "apiKey", "in": "query", "name": "appkey"},
    "bearer": {"type": "http", "scheme": "bearer"},
}


class Builder:
    def __init__(self, settings: Settings, bus: Bus) -> None:
        self.settings = settings
        engines = bus.directory.engines("asr")
        self.live = {
            "models": sorted({m.id for e in engines for m in e.models}),
            "languages": sorted({lang for e in engines for m in e.models for lang in m.languages}),
            "voices": sorted({v.id for e in bus.directory.engines("tts") for v in e.voices}),
        }
        self.schemas: dict[str, Any] = {}

    # ---- schemas
    def schema(self, source: Schema) -> dict[str, Any]:
        """A reference to a model (its definitions collected), or a plain JSON schema."""
        if isinstance(source, dict):
            return source
        return {"$ref": REF.format(model=self.model(source))}

    def model(self, model: type[BaseModel]) -> str:
        schema = self.model_schema(model)
        self.schemas.update(schema.pop("$defs", {}))
        self.schemas[model.__name__] = schema
        return model.__name__

    def model_schema(self, model: type[BaseModel]) -> dict[str, Any]:
        schema = model.model_json_schema(by_alias=True, ref_template=REF)
        for part in [schema, *schema.get("$defs", {}).values()]:
            for prop in part.get("properties", {}).values():
                self.fill_live(prop)
        return schema

    def fill_live(self, prop: dict[str, Any]) -> None:
        kind = prop.pop(LIVE_ENUM, None)
        if kind is None:
            return
        choices = self.live[kind]
        if choices:
            nullable = {"type": "null"} in prop.pop("anyOf", [])
            options = {"type": "string", "enum": choices}
            prop.update({"anyOf": [options, {"type": "null"}]} if nullable else options)

    # ---- parameters
    def query(self, model: type[BaseModel]) -> list[dict[str, Any]]:
        schema = self.model_schema(model)
        required = set(schema.get("required", []))
        params = []
        for name, prop in schema["properties"].items():
            prop = _not_null(prop)
            if name not in required:
                prop = _blank_ok(prop)
            description = prop.pop("description", "")
            prop.pop("title", None)
            param = {"name": name, "in": "query", "required": name in required, "schema": prop}
            params.append({**param, "description": description})
            alias = model.model_fields[name].validation_alias
            for other in alias.choices[1:] if isinstance(alias, AliasChoices) else []:
                extra = {"name": other, "in": "query", "schema": copy.deepcopy(prop)}
                params.append({**extra, "description": f"Alias of `{name}`"})
        return params

    def operation(self, spec: RouteSpec) -> dict[str, Any]:
        op: dict[str, Any] = {"summary": spec.summary, "description": spec.description}
        if spec.tags:
            op["tags"] = list(spec.tags)
        params = self.query(spec.query) if spec.query else []
        params += [
            {"name": name, "in": "query", "required": False, **frag}
            for name, frag in spec.query_extra.items()
        ]
        params += [
            {"name": name, "in": "header", "required": True, **frag}
            for name, frag in spec.headers.items()
        ]
        params += [
            {"name": name, "in": "path", "required": True, **frag}
            for name, frag in spec.path_params.items()
        ]
        if params:
            op["parameters"] = params
        if spec.body:
            content = {media: self.media(media, s) for media, s in spec.body.items()}
            op["requestBody"] = {"required": spec.body_required, "content": content}
        if security := self.security(spec):
            op["security"] = [security]
        answers = dict(spec.answers)
        if 503 not in answers:
            answers[503] = json_answer(STOPPING, NlsEnvelope)
        op["responses"] = {str(status): self.answer(a) for status, a in sorted(answers.items())}
        for model in spec.frames:
            self.model(model)
        return op

    def media(self, media: str, source: Schema) -> dict[str, Any]:
        """A body media type; file parts of a form are sent as application/octet-stream."""
        out: dict[str, Any] = {"schema": self.schema(source)}
        if media == "multipart/form-data" and not isinstance(source, dict):
            files = [
                name
                for name, prop in self.schemas[source.__name__]["properties"].items()
                if prop.get("format") == "binary"
            ]
            out["encoding"] = {name: {"contentType": "application/octet-stream"} for name in files}
        return out

    def security(self, spec: RouteSpec) -> dict[str, list[str]]:
        needed: dict[str, list[str]] = {}
        if self.settings.apptoken and spec.auth == "nls":
            needed["nlsToken"] = []
        if self.settings.apptoken and spec.auth == "bearer":
            needed["bearer"] = []
        if self.settings.appkey and spec.appkey:
            needed["appkey"] = []
        return needed

    def answer(self, answer: Answer) -> dict[str, Any]:
        out: dict[str, Any] = {"description": answer.description}
        if answer.content:
            out["content"] = {m: {"schema": self.schema(s)} for m, s in answer.content.items()}
        return out


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is never null: `anyOf [X, null]` -> X."""
    options = [o for o in prop.get("anyOf", []) if o != {"type": "null"}]
    if "anyOf" in prop and len(options) == 1:
        rest = {k: v for k, v in prop.items() if k != "anyOf"}
        merged = {**options[0], **rest}
        if merged.get("default", "") is None:
            del merged["default"]
        return merged
    return prop


def _blank_ok(prop: dict[str, Any]) -> dict[str, Any]:
    """An empty optional query parameter means its default (bridge/params.py): say so."""
    if "enum" in prop:
        return {**prop, "enum": [*prop["enum"], ""]}
    if prop.get("type") == "string" and "pattern" not in prop:
        return prop
    meta = {k: prop[k] for k in ("default", "description", "title") if k in prop}
    rule = {k: v for k, v in prop.items() if k not in meta}
    return {"anyOf": [rule, {"const": ""}], **meta}


def document(app: web.Application) -> dict[str, Any]:
    settings = app[SETTINGS]
    builder = Builder(settings, app[BUS])
    paths: dict[str, dict[str, Any]] = {}
    for spec in app[ROUTES]:
        paths.setdefault(spec.path, {})[spec.method.lower()] = builder.operation(spec)
    used = {name for name in SCHEMES if _uses(paths, name)}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "FunSpeech",
            "version": VERSION,
            "description": "Speech recognition and synthesis, wire-compatible with Alibaba "
            "Cloud NLS and the OpenAI audio API. See docs/rest-api.md.",
        },
        "paths": {p: paths[p] for p in sorted(paths)},
        "components": {
            "schemas": dict(sorted(builder.schemas.items())),
            "securitySchemes": {name: SCHEMES[name] for name in sorted(used)},
        },
    }


def _uses(paths: dict[str, dict[str, Any]], scheme: str) -> bool:
    return any(
        scheme in requirement
        for ops in paths.values()
        for op in ops.values()
        for requirement in op.get("security", [])
    )


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(document(request.app))


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=render_html(document(request.app)), content_type="text/html")


SPECS = [
    RouteSpec(
        "GET",
        "/openapi.json",
        openapi_json,
        "This document (DEBUG only)",
        answers={200: json_answer("OpenAPI 3.1", {"type": "object"})},
    ),
    RouteSpec(
        "GET",
        "/docs",
        docs,
        "This document as an HTML page (DEBUG only)",
        answers={200: Answer("HTML", {"text/html": {"type": "string"}})},
    ),
]


def setup(app: web.Application) -> None:
    if app[SETTINGS].debug:
        register(app, SPECS)
