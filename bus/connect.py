"""How every FunSpeech process connects to NATS (bus clients, engines, the launcher).

NATS_URL is one server or a comma-separated list, e.g. for a 3-node cluster seen from host 2:
`nats://10.0.0.2:4222,nats://10.0.0.1:4222,nats://10.0.0.3:4222`. The list is tried in order
(no shuffling): put the node on the same machine first and the others as fallbacks; the server
adds the cluster members it knows. Reconnects never give up.

Liveness: a killed server closes its sockets and the client reconnects at once; a server (or
the path to it) that vanishes silently is noticed by the client's pings: PING_INTERVAL_S
between pings, MAX_OUTSTANDING_PINGS unanswered allowed, so within about
PING_INTERVAL_S * (MAX_OUTSTANDING_PINGS + 1) seconds (6 s) instead of nats-py's 4-6 minutes.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client

PING_INTERVAL_S = 2
MAX_OUTSTANDING_PINGS = 2
RECONNECT_WAIT_S = 0.5  # before trying a server again that failed just now
CONNECT_TIMEOUT_S = 2


def shown(url: str) -> str:
    """NATS_URL for messages and logs: credentials masked."""
    return re.sub(r"//[^@/,]*@", "//***@", url)


def servers(url: str) -> list[str]:
    """NATS_URL as the server list nats-py takes (a single string would be one server)."""
    found = [part.strip() for part in url.split(",") if part.strip()]
    if not found:
        raise ValueError("NATS_URL names no server")
    return found


async def connect(
    url: str,
    name: str,
    *,
    disconnected_cb: Callable[[], Awaitable[None]] | None = None,
    reconnected_cb: Callable[[], Awaitable[None]] | None = None,
    **options: Any,
) -> Client:
    settings: dict[str, Any] = {
        "name": name,
        "dont_randomize": True,
        "ping_interval": PING_INTERVAL_S,
        "max_outstanding_pings": MAX_OUTSTANDING_PINGS,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": RECONNECT_WAIT_S,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "disconnected_cb": disconnected_cb,
        "reconnected_cb": reconnected_cb,
    }
    return await nats.connect(servers(url), **(settings | options))
