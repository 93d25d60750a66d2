"""What the bus client reports about its sessions, for metrics (bridge/metrics.py feeds
Prometheus from it). The default observer does nothing; a Bus takes another as
`bus.observer`. Methods run on the hot path: keep them cheap, never raise.

Latencies across processes use wall-clock stamps in a NATS header (SENT_HEADER, ns since the
epoch): the bus client stamps one audio chunk in STAMP_EVERY, engines stamp their result events.
On one host the clocks agree; across hosts they are as good as the hosts' NTP (negative values
count as 0).
"""

from __future__ import annotations

import time

SENT_HEADER = "Fs-Sent"  # when the message was published: time.time_ns() as a decimal string
STAMP_EVERY = 10  # one audio chunk in this many carries SENT_HEADER (the first one included)


def stamp() -> dict[str, str]:
    return {SENT_HEADER: str(time.time_ns())}


def age_s(headers: dict[str, str] | None) -> float | None:
    """Seconds since a message was stamped (None: no stamp)."""
    if not headers or SENT_HEADER not in headers:
        return None
    try:
        sent = int(headers[SENT_HEADER])
    except ValueError:
        return None
    return max(0.0, (time.time_ns() - sent) / 1e9)


class BusObserver:
    """Session life and latencies as one bus client sees them. `task` is "asr" or "tts";
    `code` an NLS status code (20000000 = success)."""

    def opened(self, task: str) -> None:
        """A session was opened on an engine."""

    def refused(self, task: str, code: int) -> None:
        """Opening a session failed (no engine, all full, bad model, ...)."""

    def ended(self, task: str, code: int) -> None:
        """A session that was opened ended: completed (20000000) or failed with `code`."""

    def chunk(self, size: int) -> None:
        """An audio chunk was published to an engine."""

    def event(self, task: str, kind: str, latency_s: float | None) -> None:
        """An event from an engine reached its consumer; latency_s = since the engine
        emitted it (None: not stamped)."""

    def first_partial(self, seconds: float) -> None:
        """First audio sent -> first result (partial or sentence end) of a session."""

    def final(self, seconds: float) -> None:
        """Stop sent -> the session's completed event."""

    def first_audio(self, seconds: float) -> None:
        """TTS: request (or first text of a flowing session) -> first audio."""


NULL = BusObserver()
