"""The OpenAPI document as one self-contained HTML page (no scripts, no external assets)."""

from __future__ import annotations

import html
import json
from typing import Any


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
