"""OpenAPI 3.1 document of the HTTP surface at `/openapi.json`, rendered as a self-contained
HTML reference at `/docs` (no external assets). Served only when DEBUG=true, else 404.

Routes other modules register without an entry here still appear (summary from the handler's
docstring), so the document lists every endpoint the bridge serves.
"""

from __future__ import annotations

import html
import json
from typing import Any

from aiohttp import web

from bridge.app import SETTINGS
from bridge.info import VERSION

J = "application/json"
NLS_ERRORS = {
    "400": "Bad parameter or audio (status 40000002 / 40000003 / 41010101)",
    "401": "Token or appkey missing or wrong (status 40000001)",
    "413": "Audio larger than MAX_AUDIO_SIZE (status 40000002)",
    "429": "Every engine at capacity (status 40000005)",
    "500": "Server error (status 50000000)",
    "503": "No ASR engine running (status 50000000)",
}
OPENAI_ERRORS = {
    "400": "invalid_request_error",
    "401": "invalid_api_key",
    "413": "file larger than MAX_AUDIO_SIZE",
    "429": "every engine at capacity",
    "500": "server_error",
    "503": "no ASR engine running",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {J: {"schema": schema}}}


def _errors(table: dict[str, str], schema: str) -> dict[str, Any]:
    return {code: _json(_ref(schema), text) for code, text in table.items()}


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


BOOL = {"type": "boolean", "default": False}
NLS_TOKEN = [{"nlsToken": []}]
ASR_PARAMS = [
    _q("appkey", {"type": "string"}, "Required when APPKEY is configured"),
    _q(
        "format",
        {
            "enum": ["pcm", "wav", "opus", "speex", "amr", "mp3", "aac", "m4a", "flac", "ogg"],
            "default": "pcm",
        },
        "Audio format; containers are sniffed, headerless data with pcm is raw s16le mono",
    ),
    _q(
        "sample_rate",
        {"type": "integer", "minimum": 8000, "maximum": 48000, "default": 16000},
        "Rate of raw PCM (containers carry their own); outside 8000..48000 -> 41010101",
    ),
    _q("customization_id", {"type": "string"}, "Model id from /stream/v1/asr/models"),
    _q("vocabulary_id", {"type": "string"}, "Accepted; no vocabulary store (no effect)"),
    _q("enable_punctuation_prediction", BOOL, "Punctuate the result"),
    _q("enable_inverse_text_normalization", BOOL, "Numbers as digits (ITN)"),
    _q("enable_voice_detection", BOOL, "VAD segmentation before decoding"),
    _q("disfluency", BOOL, "Accepted; no effect"),
    _q("enable_words", BOOL, "Extension: word timestamps in `sentences`"),
    _q("hotwords", {"type": "string"}, "Extension: comma-separated hotwords"),
    _q("language", {"type": "string"}, "Extension: language code, e.g. zh, en"),
    _q(
        "audio_address",
        {"type": "string", "format": "uri"},
        "http(s) URL to download instead of the body (30 s, MAX_AUDIO_SIZE, public hosts)",
    ),
]

SCHEMAS: dict[str, Any] = {
    "NlsEnvelope": {
        "type": "object",
        "required": ["task_id", "result", "status", "message"],
        "properties": {
            "task_id": {"type": "string"},
            "result": {"type": "string"},
            "status": {"type": "integer", "examples": [20000000, 40000003]},
            "message": {"type": "string"},
            "sentences": {"type": "array", "items": _ref("Sentence")},
        },
    },
    "Sentence": {
        "type": "object",
        "properties": {
            "text": {"type": "string"},
            "begin_time": {"type": "integer", "description": "ms"},
            "end_time": {"type": "integer", "description": "ms"},
            "confidence": {"type": "number"},
            "words": {"type": "array", "items": {"type": "object"}},
        },
    },
    "OpenAIError": {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    },
    "Object": {"type": "object"},
}


def _op(summary: str, description: str = "", **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "description": description, **extra}


def _ws(name: str) -> dict[str, Any]:
    return _op(
        f"{name} (WebSocket)",
        "A GET with `Upgrade: websocket`. NLS protocol: JSON text frames with header/payload "
        "(StartTranscription, StopTranscription, ControlTranscriber; StartRecognition, "
        "StopRecognition), binary frames of audio. Token: `X-NLS-Token` header or `token` "
        "query parameter. OpenAPI cannot describe the frames; see docs/rest-api.md.",
        parameters=[_q("token", {"type": "string"}, "Token (alternative to the header)")],
        responses={"101": {"description": "Switching Protocols"}},
    )


PATHS: dict[str, Any] = {
    "/": {"get": _op("Service information", responses={"200": _json(_ref("Object"), "OK")})},
    "/health": {
        "get": _op(
            "Load balancer health",
            "No auth. 200 while the bridge is connected to NATS (with the engine count).",
            responses={"200": _json(_ref("Object"), "Up"), "503": _json(_ref("Object"), "Down")},
        )
    },
    "/stream/v1/asr": {
        "post": _op(
            "One-shot recognition (NLS RESTful)",
            "Audio in the body (application/octet-stream), at most ASR_MAX_DURATION (60 s).",
            parameters=ASR_PARAMS,
            security=NLS_TOKEN,
            requestBody={
                "content": {
                    "application/octet-stream": {
                        "schema": {"type": "string", "contentMediaType": "application/octet-stream"}
                    }
                }
            },
            responses={
                "200": _json(_ref("NlsEnvelope"), "Recognised (status 20000000)"),
                **_errors({"408": "Body not received in time", **NLS_ERRORS}, "NlsEnvelope"),
            },
        )
    },
    "/stream/v1/asr/health": {
        "get": _op(
            "ASR health from live engines",
            "status healthy / degraded / unhealthy, always HTTP 200.",
            security=NLS_TOKEN,
            responses={
                "200": _json(_ref("Object"), "Health"),
                "401": _json(_ref("NlsEnvelope"), "Bad token"),
            },
        )
    },
    "/stream/v1/asr/models": {
        "get": _op(
            "Models served by live engines",
            security=NLS_TOKEN,
            responses={
                "200": _json(_ref("Object"), "Models"),
                "401": _json(_ref("NlsEnvelope"), "Bad token"),
            },
        )
    },
    "/ws/v1": {"get": _ws("NLS gateway, every namespace")},
    "/ws/v1/asr": {"get": _ws("NLS SpeechTranscriber / SpeechRecognizer")},
    "/v1/audio/transcriptions": {
        "post": _op(
            "OpenAI transcription",
            "multipart/form-data: file, model (whisper-1 etc. -> default model; a local model "
            "id selects it), language, prompt, response_format (json text srt vtt verbose_json "
            "diarized_json), timestamp_granularities[], temperature, stream (SSE "
            "transcript.text.delta / transcript.text.done).",
            security=[{"bearer": []}],
            requestBody={
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {
                                "file": {
                                    "type": "string",
                                    "contentMediaType": "application/octet-stream",
                                },
                                "model": {"type": "string"},
                                "response_format": {"type": "string"},
                                "stream": {"type": "boolean"},
                            },
                        }
                    }
                }
            },
            responses={
                "200": {
                    "description": "Transcript",
                    "content": {
                        J: {"schema": _ref("Object")},
                        "text/plain": {},
                        "text/event-stream": {},
                    },
                },
                **_errors(OPENAI_ERRORS, "OpenAIError"),
            },
        )
    },
    "/v1/models": {
        "get": _op(
            "OpenAI model list (live ASR models)",
            security=[{"bearer": []}],
            responses={
                "200": _json(_ref("Object"), "List"),
                "401": _json(_ref("OpenAIError"), "Bad key"),
            },
        )
    },
    "/openapi.json": {"get": _op("This document (DEBUG only)")},
    "/docs": {"get": _op("HTML reference (DEBUG only)")},
}


def document(app: web.Application) -> dict[str, Any]:
    paths = json.loads(json.dumps(PATHS))
    for route in app.router.routes():
        path, method = route.resource.canonical if route.resource else "", route.method.lower()
        if not path or method in ("head", "options", "*") or method in paths.get(path, {}):
            continue
        doc = (getattr(route.handler, "__doc__", None) or "").strip()
        summary = doc.split("\n")[0] if doc else f"{method.upper()} {path}"
        paths.setdefault(path, {})[method] = _op(summary, doc)
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
            "schemas": SCHEMAS,
            "securitySchemes": {
                "nlsToken": {"type": "apiKey", "in": "header", "name": "X-NLS-Token"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def render_html(spec: dict[str, Any]) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(spec['info']['title'])} API</title><style>",
        "body{font:14px/1.45 system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
        "h2{margin-top:2em;font-family:monospace}.m{display:inline-block;min-width:4em;"
        "padding:2px 6px;border-radius:4px;background:#245;color:#fff;margin-right:.5em}"
        "table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:3px 6px;"
        "text-align:left;vertical-align:top}code{background:#f3f3f3}",
        "</style></head><body>",
        f"<h1>{e(spec['info']['title'])} {e(spec['info']['version'])}</h1>",
        f"<p>{e(spec['info']['description'])} Machine-readable: "
        "<a href='/openapi.json'>/openapi.json</a>.</p>",
    ]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            parts.append(f"<h2><span class='m'>{e(method.upper())}</span>{e(path)}</h2>")
            parts.append(f"<p><b>{e(op.get('summary', ''))}</b></p>")
            if op.get("description"):
                parts.append(f"<p>{e(op['description'])}</p>")
            if op.get("security"):
                schemes = ", ".join(k for s in op["security"] for k in s)
                parts.append(f"<p>Auth: <code>{e(schemes)}</code></p>")
            if op.get("parameters"):
                parts.append(
                    "<table><tr><th>parameter</th><th>in</th><th>schema</th>"
                    "<th>description</th></tr>"
                )
                for p in op["parameters"]:
                    schema = json.dumps(p.get("schema", {}), ensure_ascii=False)
                    parts.append(
                        f"<tr><td><code>{e(p['name'])}</code></td><td>{e(p['in'])}</td>"
                        f"<td><code>{e(schema)}</code></td><td>{e(p.get('description', ''))}</td>"
                        "</tr>"
                    )
                parts.append("</table>")
            if op.get("requestBody"):
                kinds = ", ".join(op["requestBody"].get("content", {}))
                parts.append(f"<p>Body: <code>{e(kinds)}</code></p>")
            if op.get("responses"):
                parts.append("<table><tr><th>HTTP</th><th>meaning</th></tr>")
                for code, resp in op["responses"].items():
                    desc = e(resp.get("description", ""))
                    parts.append(f"<tr><td>{e(code)}</td><td>{desc}</td></tr>")
                parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(document(request.app))


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=render_html(document(request.app)), content_type="text/html")


def setup(app: web.Application) -> None:
    if app[SETTINGS].debug:
        app.router.add_get("/openapi.json", openapi_json)
        app.router.add_get("/docs", docs)
