"""The HTTP access log (ACCESS_LOG=true): one INFO line per request on the logger
funspeech.bridge.access, written when the answer is complete (for a WebSocket: when the
session ends). Secrets in the query string (`token`, `appkey`) are masked."""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

LOGGER = logging.getLogger("funspeech.bridge.access")
SECRETS = ("token", "appkey")


class AccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        url = request.rel_url
        if any(key in url.query for key in SECRETS):
            url = url.update_query({k: "***" for k in SECRETS if k in url.query})
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d %.3fs "%s"',
            request.remote or "-",
            request.method,
            url,
            *request.version,
            response.status,
            response.body_length,
            time,
            request.headers.get("User-Agent", "-"),
        )
