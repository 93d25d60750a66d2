"""Scale-out benchmark on simulated hosts (network namespaces, tests/netns.py; needs root):

    python -m bench.cluster_scale sessions --engines 1,2,4 --capacity 40 --seconds 10
    python -m bench.cluster_scale latency --sessions 100 --seconds 10
    python -m bench.cluster_scale jobs --engines 1,2,4 --jobs 30

Hosts h1-h3 run a 3-node NATS cluster with JetStream (R3) from nats.conf; h1 also runs the one
bridge; engines go on h2, h3, h4, h5 in turn (h4/h5 have no NATS node); the load comes from a
client host. Engines cost no model time, so 4 of them fit on a 2-core machine:

sessions  E probe ASR engines (bench/probe_engine.py, the real AsrEngine on a measuring null
          backend, capacity C each), added one host at a time. For each E: sessions the bridge
          admits (opened until 40000005), all of them then held with paced audio (100 ms
          chunks every 100 ms) for --seconds: chunk latency client -> engine and result ->
          client (p50/p99), chunks lost, sessions failed.
latency   N paced sessions, everything on one host (one nats-server, bridge, engine, client)
          against across hosts (client -> bridge on h1 -> node 1 -> node 2 -> engine on h2).
jobs      E probe TTS engines (bench/probe_tts.py, the real TtsEngine and job worker, each
          sentence waits --sentence-ms): --jobs async jobs submitted at once through
          bus.jobs.JobStore; jobs per minute until every one is SUCCESS.

Every wait is bounded; the namespaces and every process in them go at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import nats
import numpy as np

from bench.bridge_bus import (
    OPEN_CONCURRENCY,
    PERIOD_NS,
    RAMP_NS,
    NlsSession,
    Recorder,
    latency_stats,
    machine,
    machine_ticks,
    paused_gc,
    start_offset,
)
from bench.probe_engine import CONTROL_SUBJECT
from bus.jobs import JobStore
from bus.schemas import TtsParams
from bus.subjects import Subjects
from tests.cluster import BridgeInHost, Deployment, run_in
from tests.harness import NatsServer, Proc, wait_until
from tests.netns import Host, Network, unavailable

ENGINE_HOSTS = ("h2", "h3", "h4", "h5")
Stats = dict[str, float]


async def _quiet(exc: Exception) -> None:
    """nats-py prints connection errors by default."""


def probe_engine(host: Host, url: str, index: int, capacity: int, tmp: Path) -> Proc:
    argv = [sys.executable, "-m", "bench.probe_engine", "--nats-url", url]
    argv += ["--capacity", str(capacity), "--control-subject", f"{CONTROL_SUBJECT}.{index}"]
    return Proc(f"probe-{index}", host.argv(argv), tmp).start()


class Load:
    """The client side, run inside the client host: paced NLS sessions through a bridge and the
    probes' latency logs over NATS."""

    def __init__(self, nats_url: str, ws_url: str, tmp: Path) -> None:
        self.nats_url = nats_url
        self.ws_url = ws_url
        self.tmp = tmp
        self.control: nats.aio.client.Client | None = None

    async def __aenter__(self) -> Load:
        self.control = await nats.connect(self.nats_url.split(","), error_cb=_quiet)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.control is not None:
            await self.control.close()

    async def probe(self, index: int, op: dict[str, Any]) -> dict[str, Any]:
        assert self.control is not None
        subject = f"{CONTROL_SUBJECT}.{index}"
        msg = await self.control.request(subject, json.dumps(op).encode(), timeout=10)
        return dict(json.loads(msg.data))

    async def wait_probes(self, indexes: list[int], timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            for i in indexes:
                while True:
                    with contextlib.suppress(Exception):
                        await self.probe(i, {"op": "status"})
                        break
                    await asyncio.sleep(0.2)

    async def capacity(self, http: aiohttp.ClientSession, bridge_url: str) -> int:
        async with http.get(f"{bridge_url}/stream/v1/asr/health") as r:
            body = await r.json()
        return sum(e["capacity"] for e in body["engines"] if not e["draining"])

    async def step(self, n: int, seconds: float, probes: list[int]) -> Stats:
        """Open n sessions (some may be refused), hold the admitted ones with paced audio for
        `seconds`, then stop them all; latencies from the client and the probes' logs."""
        for i in probes:
            while (await self.probe(i, {"op": "status"}))["sessions"]:
                await asyncio.sleep(0.1)
            await self.probe(i, {"op": "reset"})
        chunks = max(1, round(seconds * 1e9 / PERIOD_NS))
        sessions = [NlsSession(start_offset(i, n)) for i in range(n)]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            sem = asyncio.Semaphore(OPEN_CONCURRENCY)
            await asyncio.gather(*(s.open(http, self.ws_url, sem) for s in sessions))
            live = [s for s in sessions if s.failure is None and s.ws is not None]
            refused = [s for s in sessions if s.failure is not None]
            for s in refused:
                if s.ws is not None:
                    await s.ws.close()
            t0 = time.monotonic_ns() + 300_000_000
            end = t0 + chunks * PERIOD_NS
            window = (t0 + min(RAMP_NS, (end - t0) // 2), end)
            rec = Recorder(window)
            busy0 = machine_ticks()
            timeout = (end + RAMP_NS - time.monotonic_ns()) / 1e9 + 30
            with paused_gc():
                await asyncio.gather(
                    *(s.stream(t0, chunks, rec) for s in live),
                    *(s.receive(rec, timeout) for s in live),
                )
            busy1 = machine_ticks()
        sent_all, received_all = [], []
        for i in probes:
            path = self.tmp / f"probe-{i}-{n}.npz"
            await self.probe(i, {"op": "dump", "path": str(path)})
            with np.load(path) as data:
                sent_all.append(data["sent"])
                received_all.append(data["received"])
        sent, received = np.concatenate(sent_all), np.concatenate(received_all)
        in_window = (sent >= window[0]) & (sent < window[1])
        emitted = np.array(rec.emitted, dtype=np.int64)
        got = np.array(rec.received, dtype=np.int64)
        res_window = (emitted >= window[0]) & (emitted < window[1])
        out: Stats = {"asked": n, "held": len(live), "refused": len(refused)}
        out |= latency_stats("in", (received - sent)[in_window])
        out |= latency_stats("res", (got - emitted)[res_window])
        out["lost"] = rec.sent - int(sent.size)
        out["failed"] = sum(1 for s in live if s.failure)
        out["busy"] = 100.0 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
        reasons = sorted({str(s.failure) for s in refused})
        if reasons:
            print(f"  refused: {reasons[:2]}")
        return out


def row(label: str, s: Stats) -> str:
    return (
        f"| {label} | {s['held']:.0f} | {s['refused']:.0f} | {s['held'] * 10:.0f} | "
        f"{s['in_p50']:.2f} / {s['in_p99']:.2f} | {s['res_p50']:.2f} / {s['res_p99']:.2f} | "
        f"{s['lost']:.0f} | {s['failed']:.0f} | {s['busy']:.0f} |"
    )


HEAD = (
    "| {what} | sessions held | refused | chunks/s | chunk in→engine p50 / p99 ms | "
    "result→client p50 / p99 ms | lost | failed | machine busy % |\n"
    "|---|---:|---:|---:|---|---|---:|---:|---:|"
)


# ---------------------------------------------------------------- deployments


def cluster(net: Network, tmp: Path) -> Deployment:
    hosts = [net.hosts[h] for h in ("h1", "h2", "h3")]
    dep = Deployment(net, hosts, net.hosts["client"], tmp)
    return dep.start()


def bridge_env() -> dict[str, str]:
    return {"LOG_LEVEL": "WARNING", "ASR_IDLE_TIMEOUT": "60", "HEALTH_TASKS": ""}


def sessions_part(args: argparse.Namespace, net: Network, tmp: Path) -> str:
    dep = cluster(net, tmp)
    lines = [HEAD.format(what="engines (capacity each)")]
    try:
        bridge = dep.bridge(net.hosts["h1"], **bridge_env()).start()
        started: list[int] = []

        async def measure(count: int) -> Stats:
            async with Load(dep.urls(dep.client), f"{bridge.ws_url}/ws/v1", tmp) as load:
                await load.wait_probes(started)
                async with aiohttp.ClientSession() as http:
                    async with asyncio.timeout(30):
                        while await load.capacity(http, bridge.url) < count * args.capacity:
                            await asyncio.sleep(0.2)
                await load.step(min(10, count * args.capacity), 2.0, started)  # warm-up
                return await load.step(count * args.capacity + args.extra, args.seconds, started)

        for count in sorted(int(e) for e in args.engines.split(",")):
            while len(started) < count:
                index = len(started)
                host = net.hosts[ENGINE_HOSTS[index % len(ENGINE_HOSTS)]]
                dep.procs.append(probe_engine(host, dep.urls(host), index, args.capacity, tmp))
                started.append(index)
            print(f"sessions: {count} engine(s), asking {count * args.capacity + args.extra}")
            stats = run_in(dep.client, lambda count=count: measure(count))
            print("  " + json.dumps({k: round(v, 3) for k, v in stats.items()}))
            lines.append(row(f"{count} ({args.capacity})", stats))
    finally:
        dep.close()
    return "\n".join(lines)


def latency_part(args: argparse.Namespace, net: Network, tmp: Path) -> str:
    lines = [HEAD.format(what="path")]
    # one host: nats-server, bridge, engine and client together
    solo = net.hosts["solo"]
    server = NatsServer(tmp / "solo-js", tmp)
    server.argv = solo.argv(server.argv)
    server.start()
    procs: list[Proc] = []
    try:
        procs.append(probe_engine(solo, server.url, 100, args.sessions + 10, tmp))
        bridge = BridgeInHost(solo, server.url, tmp, **bridge_env()).start()
        procs.append(bridge)

        async def measure(url: str, ws: str, probes: list[int]) -> Stats:
            async with Load(url, ws, tmp) as load:
                await load.wait_probes(probes)
                await load.step(10, 2.0, probes)
                return await load.step(args.sessions, args.seconds, probes)

        print(f"latency: {args.sessions} sessions, one host")
        one = run_in(solo, lambda: measure(server.url, f"{bridge.ws_url}/ws/v1", [100]))
        lines.append(row("one host", one))
    finally:
        for proc in reversed(procs):
            proc.stop(10)
        server.stop(5)
    dep = cluster(net, tmp)
    try:
        h1, h2 = net.hosts["h1"], net.hosts["h2"]
        dep.procs.append(probe_engine(h2, dep.urls(h2), 101, args.sessions + 10, tmp))
        bridge = dep.bridge(h1, **bridge_env()).start()
        print(f"latency: {args.sessions} sessions, across hosts")
        url = dep.urls(dep.client)
        two = run_in(dep.client, lambda: measure(url, f"{bridge.ws_url}/ws/v1", [101]))
        lines.append(row("client → bridge h1 → node 1 → node 2 → engine h2", two))
    finally:
        dep.close()
    added = (two["in_p50"] - one["in_p50"], two["in_p99"] - one["in_p99"])
    lines.append(f"\nadded per chunk across hosts: p50 {added[0]:+.2f} ms, p99 {added[1]:+.2f} ms")
    return "\n".join(lines)


def jobs_part(args: argparse.Namespace, net: Network, tmp: Path) -> str:
    dep = cluster(net, tmp)
    subjects = Subjects()
    sentence = "This sentence is about forty characters. "
    text = sentence * args.sentences
    lines = [
        "| TTS engines (capacity each) | jobs | parts | seconds | jobs per minute | failed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    try:
        started: list[Proc] = []

        async def measure(count: int) -> Stats:
            nc = await nats.connect(dep.urls(dep.client).split(","), error_cb=_quiet)
            try:
                store = await JobStore.open(nc, subjects, replicas=3)
                t0 = time.monotonic()
                ids = [(await store.submit(text, TtsParams())).task_id for _ in range(args.jobs)]
                done: dict[str, str] = {}
                parts = 0
                async with asyncio.timeout(args.timeout):
                    while len(done) < len(ids):
                        for task_id in ids:
                            if task_id not in done:
                                job = await store.get(task_id)
                                if job is not None and job.status != "RUNNING":
                                    done[task_id] = job.status
                                    parts += job.parts_total
                        await asyncio.sleep(0.2)
                took = time.monotonic() - t0
            finally:
                await nc.close()
            failed = sum(1 for s in done.values() if s != "SUCCESS")
            return {"jobs": len(ids), "parts": parts, "seconds": took, "failed": failed}

        for count in sorted(int(e) for e in args.engines.split(",")):
            while len(started) < count:
                index = len(started)
                host = net.hosts[ENGINE_HOSTS[index % len(ENGINE_HOSTS)]]
                argv = [sys.executable, "-m", "bench.probe_tts", "--nats-url", dep.urls(host)]
                argv += ["--capacity", str(args.tts_capacity), "--replicas", "3"]
                argv += ["--sentence-ms", str(args.sentence_ms)]
                proc = Proc(f"probe-tts-{index}", host.argv(argv), tmp).start()
                dep.procs.append(proc)
                started.append(proc)
            wait_until(lambda: all(p.alive() for p in started), 5, "probe TTS engines")
            time.sleep(3)  # the job workers subscribe once their engine is live
            print(f"jobs: {count} engine(s), {args.jobs} jobs")
            stats = run_in(dep.client, lambda count=count: measure(count))
            print("  " + json.dumps({k: round(v, 2) for k, v in stats.items()}))
            per_min = stats["jobs"] / stats["seconds"] * 60
            lines.append(
                f"| {count} ({args.tts_capacity}) | {stats['jobs']:.0f} | {stats['parts']:.0f} | "
                f"{stats['seconds']:.1f} | {per_min:.0f} | {stats['failed']:.0f} |"
            )
    finally:
        dep.close()
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["sessions", "latency", "jobs"])
    parser.add_argument("--engines", default="1,2,4", help="engine counts, ascending")
    parser.add_argument("--capacity", type=int, default=40, help="sessions per ASR engine")
    parser.add_argument("--tts-capacity", type=int, default=2, help="jobs: items per TTS engine")
    parser.add_argument("--extra", type=int, default=10, help="sessions asked beyond capacity")
    parser.add_argument("--sessions", type=int, default=100, help="latency: sessions")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per session")
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--sentences", type=int, default=12, help="per job (~40 chars each)")
    parser.add_argument("--sentence-ms", type=float, default=200.0, help="probe TTS per sentence")
    parser.add_argument("--timeout", type=float, default=600.0, help="jobs: bound per step")
    args = parser.parse_args()
    if reason := unavailable():
        parser.error(f"hosts are simulated with network namespaces: {reason}")
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="funspeech-cluster-") as name, Network() as net:
        for host in ("h1", "h2", "h3", "h4", "h5", "client", "solo"):
            net.add_host(host)
        part = {"sessions": sessions_part, "latency": latency_part, "jobs": jobs_part}
        print("\n" + part[args.part](args, net, Path(name)))


if __name__ == "__main__":
    main()
