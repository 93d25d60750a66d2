"""An engine's own figures, published in every heartbeat (EngineInfo.stats and .latency) for
the bridges to export on /metrics (bridge/metrics.py; list in docs/operations.md). Plain
counters and fixed-bucket histograms: a few integer additions on the hot path, no lock (one
event loop), no extra port on the engine."""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

from bus.observer import age_s
from bus.schemas import Histogram

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from engines.server import Engine

# seconds: from sub-millisecond (one host) to seconds (a stalled engine)
LATENCY_BOUNDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LatencyCounts:
    def __init__(self, bounds: tuple[float, ...] = LATENCY_BOUNDS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket (not cumulative) until snapshot
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def snapshot(self) -> Histogram:
        cumulative, total = [], 0
        for count in self.counts:
            total += count
            cumulative.append(total)
        return Histogram(bounds=list(self.bounds), counts=cumulative, sum=self.sum)


class EngineMetrics:
    def __init__(self) -> None:
        self.sessions = 0  # sessions opened
        self.oneshots = 0  # one-shot requests taken (recognize, synthesize)
        self.chunks = 0  # audio messages received
        self.audio_bytes = 0
        self.published = 0  # messages published (events, audio, replies)
        self.jobs_done = 0  # async job items (split, part, assemble) finished
        self.jobs_failed = 0  # async jobs failed
        self.jobs_redelivered = 0  # async job items this engine got again (another attempt)
        self.chunk_latency = LatencyCounts()  # bus client publish -> engine (stamped chunks)

    def chunk(self, msg: Msg) -> None:
        self.chunks += 1
        self.audio_bytes += len(msg.data)
        if msg.headers:
            age = age_s(msg.headers)
            if age is not None:
                self.chunk_latency.observe(age)

    def stats(self, engine: Engine) -> dict[str, float]:
        queued = sum(getattr(getattr(s, "inbox", None), "queued_bytes", 0) for s in
                     engine.sessions.values())  # fmt: skip
        return {
            "sessions_total": self.sessions,
            "oneshots_total": self.oneshots,
            "chunks_total": self.chunks,
            "audio_bytes_total": self.audio_bytes,
            "published_total": self.published,
            "outbox_depth": engine.outbox_depth(),
            "audio_queued_bytes": queued,
            "jobs_done_total": self.jobs_done,
            "jobs_failed_total": self.jobs_failed,
            "jobs_redelivered_total": self.jobs_redelivered,
        }

    def latency(self) -> dict[str, Histogram]:
        return {"chunk_in": self.chunk_latency.snapshot()}
