"""Prometheus metrics at `GET /metrics` (prometheus-client text format; docs/operations.md lists
every series). One scrape of a bridge shows three sources:

- the sessions through this bridge, from its bus client (bus/observer.py): opened, active,
  completed / failed by NLS code / aborted, audio chunks, events, latencies;
- every live engine, from its heartbeats (EngineInfo.stats / .latency / .load,
  engines/metrics.py): capacity, load, queue depths, counters, chunk latency. Engines open no
  port of their own, and every bridge exports the same engine series (aggregate with
  `max by (engine)`);
- the async job work queue in JetStream, read at scrape time.

METRICS_ENABLED=false removes the route. Multi-process bridges (WORKERS > 1 on one port) each
answer for themselves: scrape one bridge per process (docs/operations.md).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import ClassVar

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from bridge.keys import BUS, LIVE
from bridge.routes import Answer, RouteSpec, register
from bus.client import Bus
from bus.codes import SUCCESS
from bus.observer import BusObserver
from bus.schemas import EngineInfo
from funspeech.settings import Settings

log = logging.getLogger("funspeech.bridge.metrics")
disable_created_metrics()  # no *_created series: half the output, and Prometheus ignores them

TASKS = ("asr", "tts")
# seconds: bus hops are sub-millisecond on one host, results and first audio take longer
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SLOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
JETSTREAM_TIMEOUT_S = 1.0
ENGINE_LABELS = ["task", "engine", "host", "device", "backend"]
# EngineInfo.stats keys -> (metric name, kind, help)
ENGINE_STATS = {
    "sessions_total": ("sessions", "counter", "Sessions the engine opened"),
    "oneshots_total": ("oneshots", "counter", "One-shot requests the engine took"),
    "chunks_total": ("chunks", "counter", "Audio messages the engine received"),
    "audio_bytes_total": ("audio_bytes", "counter", "Audio bytes the engine received"),
    "published_total": ("published", "counter", "Messages the engine published"),
    "jobs_done_total": ("job_items_done", "counter", "Async job work items finished"),
    "jobs_failed_total": ("jobs_failed", "counter", "Async jobs failed"),
    "jobs_redelivered_total": ("job_items_redelivered", "counter", "Job items taken again"),
    "outbox_depth": ("outbox_depth", "gauge", "Messages waiting in the engine's outbox"),
    "audio_queued_bytes": ("audio_queued_bytes", "gauge", "Audio waiting in session inboxes"),
}


class SessionMetrics(BusObserver):
    """The bridge's bus client reports here (hot path: pre-bound children, no allocation)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(f"funspeech_{name}", doc, labels, registry=registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...] = BUCKETS) -> Histogram:
            return Histogram(f"funspeech_{name}", doc, buckets=buckets, registry=registry)

        active = Gauge(
            "funspeech_sessions_active", "Sessions open now", ["task"], registry=registry
        )
        opened = counter("sessions_opened", "Sessions opened on an engine", ("task",))
        completed = counter("sessions_completed", "Sessions that ended normally", ("task",))
        aborted = counter("sessions_aborted", "Sessions the client left early", ("task",))
        self.failed = counter(
            "sessions_failed",
            "Sessions that failed, when opening or later, by NLS status code",
            ("task", "code"),
        )
        self.events = counter("events", "Events received from engines", ("task", "type"))
        self._active = {t: active.labels(t) for t in TASKS}
        self._opened = {t: opened.labels(t) for t in TASKS}
        self._completed = {t: completed.labels(t) for t in TASKS}
        self._aborted = {t: aborted.labels(t) for t in TASKS}
        self._event_children: dict[tuple[str, str], Counter] = {}
        self._chunks = counter("audio_chunks", "Audio messages sent to engines")
        self._bytes = counter("audio_bytes", "Audio bytes sent to engines")
        self._result = histogram(
            "result_latency_seconds", "Engine emits a result -> the bridge passes it on"
        )
        self._first = histogram(
            "first_result_seconds",
            "A session's first audio sent -> its first result (partial or sentence)",
            SLOW_BUCKETS,
        )
        self._final = histogram(
            "final_latency_seconds", "Stop sent -> the final result (completed)", SLOW_BUCKETS
        )
        self._first_audio = histogram(
            "tts_first_audio_seconds", "TTS: request or first text -> first audio", SLOW_BUCKETS
        )

    def opened(self, task: str) -> None:
        self._opened[task].inc()
        self._active[task].inc()

    def refused(self, task: str, code: int) -> None:
        self.failed.labels(task, str(code)).inc()

    def ended(self, task: str, code: int | None) -> None:
        self._active[task].dec()
        if code is None:
            self._aborted[task].inc()
        elif code == SUCCESS:
            self._completed[task].inc()
        else:
            self.failed.labels(task, str(code)).inc()

    def chunk(self, size: int) -> None:
        self._chunks.inc()
        self._bytes.inc(size)

    def event(self, task: str, kind: str, latency_s: float | None) -> None:
        child = self._event_children.get((task, kind))
        if child is None:
            child = self._event_children[(task, kind)] = self.events.labels(task, kind)
        child.inc()
        if latency_s is not None:
            self._result.observe(latency_s)

    def first_partial(self, seconds: float) -> None:
        self._first.observe(seconds)

    def final(self, seconds: float) -> None:
        self._final.observe(seconds)

    def first_audio(self, seconds: float) -> None:
        self._first_audio.observe(seconds)


def _labels(e: EngineInfo) -> list[str]:
    return [e.task, e.id, e.host, e.device, e.backend]


class EngineCollector(Collector):
    """Every live engine as the directory knows it from the heartbeats (at scrape time)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def collect(self) -> Iterator[Metric]:
        engines = self.bus.directory.engines()
        live = GaugeMetricFamily("funspeech_engines", "Live engines", labels=["task"])
        capacity = GaugeMetricFamily(
            "funspeech_capacity", "Sessions the live engines admit (draining ones excluded)",
            labels=["task"],
        )  # fmt: skip
        load = GaugeMetricFamily("funspeech_load", "Sessions on the live engines", labels=["task"])
        for task in TASKS:
            mine = [e for e in engines if e.task == task]
            live.add_metric([task], len(mine))
            capacity.add_metric([task], sum(e.capacity for e in mine if not e.draining))
            load.add_metric([task], sum(e.active for e in mine))
        yield from (live, capacity, load)
        yield from self._per_engine(engines)

    def _per_engine(self, engines: list[EngineInfo]) -> Iterator[Metric]:
        def gauge(name: str, doc: str, extra: list[str] | None = None) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"funspeech_engine_{name}", doc,
                                     labels=ENGINE_LABELS + (extra or []))  # fmt: skip

        cap = gauge("capacity", "Sessions the engine admits")
        active = gauge("active", "Sessions and one-shot requests on the engine now")
        draining = gauge("draining", "1 while the engine takes no new sessions")
        backend = gauge("backend_load", "The backend's own load figures", ["name"])
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for key, (name, kind, doc) in ENGINE_STATS.items():
            cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            families[key] = cls(f"funspeech_engine_{name}", doc, labels=ENGINE_LABELS)
        chunk_in = HistogramMetricFamily(
            "funspeech_engine_chunk_latency_seconds",
            "Bus client publishes an audio chunk -> the engine receives it (stamped chunks)",
            labels=ENGINE_LABELS,
        )
        for e in engines:
            labels = _labels(e)
            cap.add_metric(labels, e.capacity)
            active.add_metric(labels, e.active)
            draining.add_metric(labels, float(e.draining))
            for name, value in e.load.items():
                backend.add_metric([*labels, name], value)
            for key, value in e.stats.items():
                if key in families:
                    families[key].add_metric(labels, value)
            hist = e.latency.get("chunk_in")
            if hist is not None and len(hist.counts) == len(hist.bounds) + 1:
                buckets = [(f"{b:g}", c) for b, c in zip(hist.bounds, hist.counts, strict=False)]
                chunk_in.add_metric(labels, [*buckets, ("+Inf", hist.counts[-1])], hist.sum)
        yield from (cap, active, draining, backend, *families.values(), chunk_in)


class BridgeCollector(Collector):
    """This bridge: its NATS connection and the client connections in flight."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        bus, live = self.app[BUS], self.app[LIVE]
        yield GaugeMetricFamily(
            "funspeech_nats_connected", "1 while the bridge is connected to NATS",
            value=float(bus.nc.is_connected),
        )  # fmt: skip
        yield CounterMetricFamily(
            "funspeech_nats_reconnects", "Reconnections to NATS since start",
            value=bus.nc.stats.get("reconnects", 0),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "funspeech_requests_in_flight", "HTTP requests and WebSocket sessions in flight",
            value=live.requests,
        )  # fmt: skip


class JobQueue(Collector):
    """The async TTS work queue (bus/jobs.py: stream fs_jobs), read from JetStream before each
    scrape: per consumer of the stream (the engines' workers, the bridges' notifiers)."""

    DOCS: ClassVar[dict[str, str]] = {
        "queued": "Async job items waiting in the work queue, per consumer",
        "running": "Async job items handed out and not yet acknowledged, per consumer",
        "redelivered": "Async job items handed out more than once and not yet done",
    }

    def __init__(self) -> None:
        self.values: dict[str, dict[str, float]] = {}

    async def refresh(self, bus: Bus) -> None:
        values: dict[str, dict[str, float]] = {}
        js = bus.nc.jetstream(timeout=JETSTREAM_TIMEOUT_S)
        with contextlib.suppress(Exception):  # no JetStream, no stream yet, NATS away
            for info in await js.consumers_info(bus.subjects.bucket("jobs")):
                values[info.name] = {
                    "queued": float(info.num_pending or 0),
                    "running": float(info.num_ack_pending or 0),
                    "redelivered": float(info.num_redelivered or 0),
                }
        self.values = values

    def collect(self) -> Iterator[Metric]:
        for key, doc in self.DOCS.items():
            family = GaugeMetricFamily(f"funspeech_job_items_{key}", doc, labels=["consumer"])
            for consumer, figures in sorted(self.values.items()):
                family.add_metric([consumer], figures[key])
            yield family


class Metrics:
    def __init__(self, app: web.Application) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.sessions = SessionMetrics(self.registry)
        self.jobs = JobQueue()
        self.registry.register(BridgeCollector(app))
        self.registry.register(self.jobs)


METRICS = web.AppKey("metrics", Metrics)


async def metrics(request: web.Request) -> web.Response:
    state = request.app[METRICS]
    await state.jobs.refresh(request.app[BUS])
    body = generate_latest(state.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


SPECS = [
    RouteSpec(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics",
        "No auth (keep it off the public load balancer). Sessions through this bridge, every "
        "live engine (from their heartbeats) and the async job queue; docs/operations.md.",
        answers={200: Answer("Prometheus text format", {"text/plain": {"type": "string"}})},
        tags=("Operations",),
    )
]


def setup(app: web.Application, settings: Settings) -> None:
    """After the bus context (bridge/app.py): the bus client reports to this app's registry."""
    if not settings.metrics_enabled:
        return
    state = app[METRICS] = Metrics(app)

    async def attach(app: web.Application) -> AsyncIterator[None]:
        bus = app[BUS]
        bus.observer = state.sessions
        state.registry.register(EngineCollector(bus))
        yield

    app.cleanup_ctx.append(attach)
    register(app, SPECS)
