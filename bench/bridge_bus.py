"""Bridge + bus benchmark: N paced realtime NLS sessions through the real bridge process and a
real nats-server to a real engine process on the probe backend (bench/probe_backend.py).

    python -m bench.bridge_bus --sessions 50,100,200,300,500 --seconds 15

Each session sends 16 kHz s16le audio in 100 ms chunks (3,200 bytes) every 100 ms. Starts are
staggered over one second: chunks arrive evenly spread within every 100 ms, and the probe's
partials (every 10th chunk) evenly within every second. The client stamps time.monotonic_ns()
into the first 8 bytes of each chunk; the probe logs (stamp, receive time), and the engine hands
its log back after each step (bench-only NATS request -> .npz file). Measured per step:

  in->eng   chunk written by the client -> feed() in the engine               (bridge + bus)
  res->cli  partial emitted by the engine -> NLS frame read by the client     (bus + bridge)
  1st part  first chunk sent -> first TranscriptionResultChanged, per session
  final     StopTranscription sent -> TranscriptionCompleted, per session
  CPU       utime+stime deltas from /proc/<pid>/stat over the measured window

Then the same probe in-process (no bridge, no bus): paced feed() calls for N sessions in one
asyncio loop, and the ratio bus / in-process. Everything runs on 127.0.0.1, every wait is
bounded, and the child processes are stopped on exit, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import numpy as np
from nats.aio.client import Client as Nats

from bench.probe_backend import PARTIAL_EVERY, ProbeAsrBackend, stamped
from bench.probe_engine import CONTROL_SUBJECT
from bus.schemas import AsrEvent, AsrParams
from funspeech.procs import die_with_parent, free_port
from tests.harness import NatsServer, ProcessGroup
from tests.harness import nls_frame as harness_nls_frame
from tests.harness import wait_port as wait_port_blocking

ROOT = Path(__file__).resolve().parent.parent
PERIOD_NS = 100_000_000  # one chunk per 100 ms per session
CHUNK_BYTES = 3200  # 100 ms of 16 kHz s16le mono
BODY = bytes(CHUNK_BYTES - 8)  # the chunk after its 8-byte stamp
RAMP_NS = PARTIAL_EVERY * PERIOD_NS  # sessions start over 1 s; that second is not measured
OPEN_CONCURRENCY = 64  # WebSocket handshakes + StartTranscription in flight at once
TARGET_P99_MS = 5.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
MS = 1e6  # ns per ms
TEXT = aiohttp.WSMsgType.TEXT

Stats = dict[str, float]


# ---------------------------------------------------------------- processes


async def wait_port(port: int, timeout: float = 20.0, procs: ProcessGroup | None = None) -> None:
    """harness.wait_port without blocking the loop."""
    await asyncio.to_thread(wait_port_blocking, port, timeout)
    if procs is not None:
        procs.check()


async def _ignore(exc: Exception) -> None:
    """nats-py prints connection errors by default; a stopped bench expects them."""


# ---------------------------------------------------------------- CPU from /proc


def cpu_ticks(pid: int | str) -> tuple[int, int]:
    """(utime, stime) of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]), int(fields[12])


def machine_ticks() -> tuple[int, int]:
    """(busy, total) ticks of all CPUs."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


class CpuWindow:
    """% of one core per process (and its kernel part) between begin() and end(), and the
    machine's busy %."""

    def __init__(self, pids: dict[str, int | str]) -> None:
        self.pids = pids
        self._start: dict[str, tuple[int, int]] = {}
        self._machine = (0, 0)
        self._t = 0.0
        self.result: Stats = {}

    def begin(self) -> None:
        self._start = {name: cpu_ticks(pid) for name, pid in self.pids.items()}
        self._machine = machine_ticks()
        self._t = time.monotonic()

    def end(self) -> None:
        wall = time.monotonic() - self._t
        for name, pid in self.pids.items():
            (user0, sys0), (user1, sys1) = self._start[name], cpu_ticks(pid)
            self.result[f"cpu_{name}"] = 100.0 * (user1 - user0 + sys1 - sys0) / CLK_TCK / wall
            self.result[f"sys_{name}"] = 100.0 * (sys1 - sys0) / CLK_TCK / wall
        busy, total = machine_ticks()
        self.result["cpu_machine"] = (
            100.0 * (busy - self._machine[0]) / max(1, total - self._machine[1])
        )
        # everything else on the machine (other users' processes), in % of one core
        machine_core = 100.0 * (busy - self._machine[0]) / CLK_TCK / wall
        ours = sum(self.result[f"cpu_{name}"] for name in self.pids)
        self.result["cpu_other"] = max(0.0, machine_core - ours)


async def cpu_during(window: CpuWindow, begin_ns: int, end_ns: int) -> None:
    await asyncio.sleep(max(0.0, (begin_ns - time.monotonic_ns()) / 1e9))
    window.begin()
    await asyncio.sleep(max(0.0, (end_ns - time.monotonic_ns()) / 1e9))
    window.end()


async def wait_quiet(pids: dict[str, int | str], limit: float, max_wait: float) -> float:
    """Wait (at most max_wait s) until processes not ours use < limit % of a core; the last
    figure seen. The machine may be shared, and a busy neighbour ruins latency figures."""
    deadline = time.monotonic() + max_wait
    while True:
        window = CpuWindow(pids)
        window.begin()
        await asyncio.sleep(1.0)
        window.end()
        other = window.result["cpu_other"]
        if other < limit or time.monotonic() > deadline:
            return other
        print(f"  waiting for a quiet machine: other processes use {other:.0f}% of a core")


# ---------------------------------------------------------------- statistics


def pct(values: np.ndarray | list[int], q: float) -> float:
    """Percentile in ms of values in ns (nan when empty)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(np.percentile(arr, q)) / MS if arr.size else float("nan")


def latency_stats(prefix: str, lat_ns: np.ndarray | list[int]) -> Stats:
    return {
        f"{prefix}_p50": pct(lat_ns, 50),
        f"{prefix}_p99": pct(lat_ns, 99),
        f"{prefix}_n": float(len(lat_ns)),
    }


# ---------------------------------------------------------------- NLS client sessions


def start_offset(i: int, n: int) -> int:
    """Start of session i of n (ns after t0): chunk sends spread evenly over each 100 ms, and
    the probe's partials (every 10th chunk) spread evenly over each second, not in a burst."""
    return (i % PARTIAL_EVERY) * PERIOD_NS + i * PERIOD_NS // n


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic GC in the load generator while it measures: a collection pause here would
    count as bridge/bus latency. (Bridge and engine run with their own, unchanged GC.)"""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def nls_frame(name: str, task_id: str, payload: dict[str, Any] | None = None) -> str:
    return harness_nls_frame(name, task_id, payload, appkey="bench")


class Recorder:
    """What the client side measures in one step (monotonic ns)."""

    def __init__(self, window: tuple[int, int]) -> None:
        self.window = window
        self.send_lag: list[int] = []  # actual send - scheduled send, chunks in the window
        self.emitted: list[int] = []  # partials: engine emit time
        self.received: list[int] = []  # partials: client receive time
        self.sent = 0


class NlsSession:
    """One paced SpeechTranscriber session over one WebSocket."""

    def __init__(self, offset_ns: int) -> None:
        self.offset_ns = offset_ns
        self.task_id = uuid.uuid4().hex
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.first_sent = 0
        self.stop_sent = 0
        self.first_partial: int | None = None
        self.final: int | None = None
        self.failure: str | None = None

    async def open(self, http: aiohttp.ClientSession, url: str, sem: asyncio.Semaphore) -> None:
        async with sem:
            try:
                async with asyncio.timeout(15):
                    self.ws = await http.ws_connect(url, autoping=True)
                    params = {
                        "format": "pcm",
                        "sample_rate": 16000,
                        "enable_intermediate_result": True,
                    }
                    await self.ws.send_str(nls_frame("StartTranscription", self.task_id, params))
                    msg = await self.ws.receive()
                    header = json.loads(msg.data)["header"] if msg.type == TEXT else {}
                    if header.get("name") != "TranscriptionStarted":
                        self.failure = f"start: {header.get('status_text', msg.type.name)}"
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                self.failure = f"start: {exc!r}"

    async def stream(self, t0_ns: int, chunks: int, rec: Recorder) -> None:
        """Paced chunks, then StopTranscription one period after the last one."""
        ws = self.ws
        assert ws is not None
        due = t0_ns + self.offset_ns
        lo, hi = rec.window
        try:
            for k in range(chunks):
                delay = due - time.monotonic_ns()
                if delay > 0:
                    await asyncio.sleep(delay / 1e9)
                if ws.closed:
                    return
                now = time.monotonic_ns()
                if k == 0:
                    self.first_sent = now
                await ws.send_bytes(stamped(now, BODY))
                rec.sent += 1
                if lo <= due < hi:
                    rec.send_lag.append(now - due)
                due += PERIOD_NS
            await asyncio.sleep(max(0.0, (due - time.monotonic_ns()) / 1e9))
            self.stop_sent = time.monotonic_ns()
            await ws.send_str(nls_frame("StopTranscription", self.task_id))
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            self.failure = self.failure or f"send: {exc!r}"

    async def receive(self, rec: Recorder, timeout: float) -> None:
        ws = self.ws
        assert ws is not None
        try:
            async with asyncio.timeout(timeout):
                async for msg in ws:
                    now = time.monotonic_ns()
                    if msg.type != TEXT:
                        break
                    frame = json.loads(msg.data)
                    name = frame["header"]["name"]
                    if name == "TranscriptionResultChanged":
                        rec.emitted.append(int(frame["payload"]["result"]))
                        rec.received.append(now)
                        if self.first_partial is None:
                            self.first_partial = now - self.first_sent
                    elif name == "TranscriptionCompleted":
                        self.final = now - self.stop_sent
                        break
                    elif name == "TaskFailed":
                        self.failure = f"TaskFailed: {frame['header'].get('status_text')}"
                        break
            if self.final is None and self.failure is None:
                self.failure = "closed without TranscriptionCompleted"
        except TimeoutError:
            self.failure = "timeout waiting for TranscriptionCompleted"
        finally:
            await ws.close()


# ---------------------------------------------------------------- one step through the bus


class Bench:
    def __init__(self, args: argparse.Namespace, procs: ProcessGroup, tmp: Path) -> None:
        self.args = args
        self.procs = procs
        self.tmp = tmp
        self.ws_url = ""
        self.pids: dict[str, int | str] = {}
        self.control: Nats | None = None

    async def start(self) -> None:
        nats_server = NatsServer(self.tmp / "jetstream", self.tmp)
        nats_server.start(new_session=True)  # blocks until ready: start-up only
        self.procs.add("nats-server", nats_server)
        nats_pid = nats_server.pid
        nats_url = nats_server.url
        engine_pid = self.procs.start(
            "engine",
            [sys.executable, "-m", "bench.probe_engine", "--nats-url", nats_url],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        ).pid
        self.control = await nats.connect(
            nats_url, name="bench-control", allow_reconnect=False, error_cb=_ignore
        )
        deadline = time.monotonic() + 30
        while True:
            self.procs.check()
            with contextlib.suppress(nats.errors.Error):
                await self._control({"op": "status"})
                break
            if time.monotonic() > deadline:
                raise TimeoutError("the probe engine did not come up")
            await asyncio.sleep(0.2)
        bridge_port = free_port()
        env = {
            **os.environ,
            "NATS_URL": nats_url,
            "HOST": "127.0.0.1",
            "PORT": str(bridge_port),
            "WORKERS": "1",
            "LOG_FILE": "",
            "LOG_LEVEL": "WARNING",
            "APPTOKEN": "",
            "APPKEY": "",
            "ASR_IDLE_TIMEOUT": "60",  # opening 500 sessions must not idle out the first ones
        }
        bridge_pid = self.procs.start("bridge", [sys.executable, "-m", "bridge"], env=env).pid
        await wait_port(bridge_port, procs=self.procs)
        self.ws_url = f"ws://127.0.0.1:{bridge_port}/ws/v1"
        self.pids = {
            "bridge": bridge_pid,
            "engine": engine_pid,
            "nats": nats_pid,
            "client": "self",
        }

    async def close(self) -> None:
        if self.control is not None:
            with contextlib.suppress(Exception):
                await self.control.close()

    async def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.control is not None
        msg = await self.control.request(CONTROL_SUBJECT, json.dumps(request).encode(), timeout=5)
        return dict(json.loads(msg.data))

    async def _engine_idle(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while (await self._control({"op": "status"}))["sessions"] and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def bus_step(self, n: int, seconds: float, profile: Path | None = None) -> Stats:
        self.procs.check()
        await self._engine_idle()
        await self._control({"op": "reset"})
        chunks = max(1, round(seconds * 1e9 / PERIOD_NS))
        sessions = [NlsSession(start_offset(i, n)) for i in range(n)]
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            sem = asyncio.Semaphore(OPEN_CONCURRENCY)
            await asyncio.gather(*(s.open(http, self.ws_url, sem) for s in sessions))
            live = [s for s in sessions if s.failure is None and s.ws is not None]
            t0 = time.monotonic_ns() + 300_000_000
            end = t0 + chunks * PERIOD_NS
            window = (t0 + min(RAMP_NS, (end - t0) // 2), end)
            rec = Recorder(window)
            cpu = CpuWindow(self.pids)
            spies = self._profile(profile, n, window) if profile else []
            timeout = (end + RAMP_NS - time.monotonic_ns()) / 1e9 + 30
            with paused_gc():
                await asyncio.gather(
                    cpu_during(cpu, *window),
                    *(s.stream(t0, chunks, rec) for s in live),
                    *(s.receive(rec, timeout) for s in live),
                )
            for s in sessions:
                if s.ws is not None and not s.ws.closed:
                    await s.ws.close()
        for spy in spies:
            await asyncio.to_thread(spy.wait, 30)
        dump = self.tmp / f"probe-{n}.npz"
        reply = await self._control({"op": "dump", "path": str(dump)})
        with np.load(dump) as data:
            sent, received = data["sent"], data["received"]
        in_window = (sent >= window[0]) & (sent < window[1])
        emitted = np.array(rec.emitted, dtype=np.int64)
        got = np.array(rec.received, dtype=np.int64)
        if self.args.dump:  # raw figures for a closer look (timelines of stalls)
            self.args.dump.mkdir(parents=True, exist_ok=True)
            np.savez(
                self.args.dump / f"bus-N{n}-{time.strftime('%H%M%S')}.npz",
                sent=sent,
                received=received,
                emitted=emitted,
                got=got,
                window=np.array(window),
            )
        res_window = (emitted >= window[0]) & (emitted < window[1])
        out: Stats = {"n": n, "opened": len(live), "chunks_per_s": len(live) * 1e9 / PERIOD_NS}
        out |= latency_stats("in", (received - sent)[in_window])
        out |= latency_stats("res", (got - emitted)[res_window])
        out["sum_p99"] = out["in_p99"] + out["res_p99"]
        out |= latency_stats("first", [s.first_partial for s in live if s.first_partial])
        out |= latency_stats("final", [s.final for s in live if s.final is not None])
        out |= latency_stats("lag", rec.send_lag)
        out |= cpu.result
        out["lost"] = rec.sent - int(reply["count"])
        out["failed"] = sum(1 for s in sessions if s.failure)
        failures = [s.failure for s in sessions if s.failure]
        if failures:
            print(f"  N={n}: {len(failures)} session(s) failed, e.g. {failures[0]}")
        return out

    def _profile(self, out_dir: Path, n: int, window: tuple[int, int]) -> list[Any]:
        """Over the measured window: py-spy record of bridge and engine (raw collapsed stacks)
        and, where perf is installed, socket syscall counts of bridge, engine and nats-server."""
        spy = Path(sys.executable).parent / "py-spy"
        seconds = max(1, int((window[1] - window[0]) / 1e9) - 1)
        delay = max(0.0, (window[0] - time.monotonic_ns()) / 1e9)
        out_dir.mkdir(parents=True, exist_ok=True)
        events = ",".join(
            f"syscalls:sys_enter_{call}"
            for call in ("sendto", "recvfrom", "epoll_wait", "write", "read", "writev")
        )
        cmds = [
            f"exec {spy} record --nonblocking --rate 250 --format raw --duration {seconds} "
            f"--pid {self.pids[name]} -o {out_dir}/{name}-N{n}.txt"
            for name in ("bridge", "engine")
        ]
        if shutil.which("perf"):
            cmds += [
                f"exec perf stat -e {events} -p {self.pids[name]} "
                f"-o {out_dir}/{name}-N{n}.perf -- sleep {seconds}"
                for name in ("bridge", "engine", "nats")
            ]
        spies = []
        for cmd in cmds:
            spies.append(
                subprocess.Popen(
                    ["sh", "-c", f"sleep {delay:.2f}; {cmd}"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    preexec_fn=die_with_parent,
                )
            )
        return spies


# ---------------------------------------------------------------- in-process baseline


async def inproc_step(n: int, seconds: float) -> Stats:
    """The probe called in-process: N paced sessions in this loop, no bridge, no bus. A chunk
    is stamped when its sender wakes (as on the bus path) and with its scheduled time; events
    reach their consumer through loop.call_soon (one loop hop)."""
    gc.collect()
    backend = ProbeAsrBackend(n)
    loop = asyncio.get_running_loop()
    emitted: list[int] = []
    received: list[int] = []
    scheduled: list[int] = []
    lag: list[int] = []

    def on_event(ev: AsrEvent) -> None:
        if ev.type == "partial":
            received.append(time.monotonic_ns())
            emitted.append(int(ev.text))

    def emit(ev: AsrEvent) -> None:
        loop.call_soon(on_event, ev)

    chunks = max(1, round(seconds * 1e9 / PERIOD_NS))
    t0 = time.monotonic_ns() + 200_000_000
    end = t0 + chunks * PERIOD_NS
    window = (t0 + min(RAMP_NS, (end - t0) // 2), end)

    async def session(i: int) -> None:
        stream = backend.open_stream(AsrParams(enable_intermediate_result=True), emit)
        due = t0 + start_offset(i, n)
        for _ in range(chunks):
            delay = due - time.monotonic_ns()
            if delay > 0:
                await asyncio.sleep(delay / 1e9)
            now = time.monotonic_ns()
            pcm = np.frombuffer(stamped(now, BODY), dtype="<i2")
            scheduled.append(due)  # the probe logs feed() calls in this same order
            await stream.feed(pcm.astype(np.float32) / 32768.0)
            lag.append(now - due)
            due += PERIOD_NS
        await stream.finish()
        stream.close()

    cpu = CpuWindow({"client": "self"})
    await asyncio.gather(cpu_during(cpu, *window), *(session(i) for i in range(n)))
    await asyncio.sleep(0)
    sent, got = backend.log.arrays()
    sched = np.array(scheduled, dtype=np.int64)  # same order: one append per feed()
    in_window = (sent >= window[0]) & (sent < window[1])
    e, r = np.array(emitted, dtype=np.int64), np.array(received, dtype=np.int64)
    out: Stats = {"n": n}
    out |= latency_stats("in", (got - sent)[in_window])
    out |= latency_stats("in_sched", (got - sched)[in_window])
    out |= latency_stats("res", (r - e)[(e >= window[0]) & (e < window[1])])
    out |= latency_stats("lag", np.array(lag)[in_window])
    out["cpu_inproc"] = cpu.result["cpu_client"]
    out["cpu_other"] = cpu.result["cpu_other"]
    return out


# ---------------------------------------------------------------- report


def fmt(value: float, digits: int = 3) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def report(bus: list[Stats], base: list[Stats]) -> str:
    lat = table(
        [
            "N",
            "chunks/s",
            "in->eng p50",
            "p99",
            "res->cli p50",
            "p99",
            "p99 sum",
            "1st part p50",
            "p99",
            "final p50",
            "p99",
            "lost",
            "failed",
        ],
        [
            [
                f"{s['n']:.0f}",
                f"{s['chunks_per_s']:.0f}",
                fmt(s["in_p50"]),
                fmt(s["in_p99"]),
                fmt(s["res_p50"]),
                fmt(s["res_p99"]),
                fmt(s["sum_p99"]),
                fmt(s["first_p50"]),
                fmt(s["first_p99"]),
                fmt(s["final_p50"]),
                fmt(s["final_p99"]),
                f"{s['lost']:.0f}",
                f"{s['failed']:.0f}",
            ]
            for s in bus
        ],
    )
    cpu = table(
        [
            "N",
            "bridge %core",
            "(sys)",
            "per stream",
            "engine %core",
            "(sys)",
            "per stream",
            "nats %core",
            "client %core",
            "machine busy %",
            "others %core",
            "send lag p99",
        ],
        [
            [
                f"{s['n']:.0f}",
                fmt(s["cpu_bridge"], 1),
                fmt(s["sys_bridge"], 1),
                fmt(s["cpu_bridge"] / s["n"], 3),
                fmt(s["cpu_engine"], 1),
                fmt(s["sys_engine"], 1),
                fmt(s["cpu_engine"] / s["n"], 3),
                fmt(s["cpu_nats"], 1),
                fmt(s["cpu_client"], 1),
                fmt(s["cpu_machine"], 1),
                fmt(s["cpu_other"], 1),
                fmt(s["lag_p99"]),
            ]
            for s in bus
        ],
    )
    by_n = {s["n"]: s for s in bus}
    ratio = table(
        [
            "N",
            "in-proc feed p50",
            "p99",
            "(from schedule p50",
            "p99)",
            "emit->cb p50",
            "p99",
            "in->eng x p50",
            "x p99",
            "res->cli x p50",
            "x p99",
            "in-proc %core",
            "others %core",
        ],
        [
            [
                f"{b['n']:.0f}",
                fmt(b["in_p50"], 4),
                fmt(b["in_p99"], 4),
                fmt(b["in_sched_p50"], 4),
                fmt(b["in_sched_p99"], 4),
                fmt(b["res_p50"], 4),
                fmt(b["res_p99"], 4),
                fmt(by_n[b["n"]]["in_p50"] / b["in_p50"], 0),
                fmt(by_n[b["n"]]["in_p99"] / b["in_p99"], 0),
                fmt(by_n[b["n"]]["res_p50"] / b["res_p50"], 0),
                fmt(by_n[b["n"]]["res_p99"] / b["res_p99"], 0),
                fmt(b["cpu_inproc"], 1),
                fmt(b["cpu_other"], 1),
            ]
            for b in base
            if b["n"] in by_n
        ],
    )
    held = [s["n"] for s in bus if s["sum_p99"] < TARGET_P99_MS and not s["lost"] + s["failed"]]
    verdict = (
        f"largest N with p99(in->eng) + p99(res->cli) < {TARGET_P99_MS:g} ms and nothing lost: "
        + (f"{max(held):.0f}" if held else "none of the steps")
    )
    return (
        "latency through bridge + bus (ms)\n"
        + lat
        + "\n\nCPU over the measured window (% of one core; per stream = % / N)\n"
        + cpu
        + "\n\nin-process baseline (ms) and bus / in-process ratios\n"
        + ratio
        + "\n\n"
        + verdict
    )


def median_runs(runs: list[list[Stats]]) -> list[Stats]:
    """Per step, the median of each figure across runs."""
    return [
        {key: statistics.median(run[i][key] for run in runs) for key in runs[0][i]}
        for i in range(len(runs[0]))
    ]


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {model}"


# ---------------------------------------------------------------- main


async def quietest(
    label: str,
    step: Callable[[], Awaitable[Stats]],
    pids: dict[str, int | str],
    args: argparse.Namespace,
) -> Stats:
    """Run a step on a quiet machine; while other processes took more than --quiet-limit % of
    a core during it, run it again (--retries times at most) and keep the quietest attempt."""
    best: Stats | None = None
    for attempt in range(1 + args.retries):
        print(f"{label} ..." + (f" (again: others used {best['cpu_other']:.0f}%)" if best else ""))
        await wait_quiet(pids, args.quiet_limit, args.quiet_wait)
        result = await step()
        if best is None or result["cpu_other"] < best["cpu_other"]:
            best = result
        if best["cpu_other"] < args.quiet_limit or attempt == args.retries:
            break
    assert best is not None
    return best


async def run(args: argparse.Namespace, procs: ProcessGroup, tmp: Path) -> dict[str, Any]:
    sizes = [int(v) for v in args.sessions.split(",") if v.strip()]
    bench = Bench(args, procs, tmp)
    await bench.start()
    print(f"machine: {machine()}")
    try:
        await bench.bus_step(min(10, max(sizes)), 2.0)  # warm-up: code paths, directory
        runs: list[list[Stats]] = []
        bases: list[list[Stats]] = []
        for r in range(args.repeat):
            bus = [
                await quietest(
                    f"run {r + 1}/{args.repeat}: bus N={n}",
                    lambda n=n: bench.bus_step(n, args.seconds, args.profile),
                    bench.pids,
                    args,
                )
                for n in sizes
            ]
            base = [
                await quietest(
                    f"run {r + 1}/{args.repeat}: in-process N={n}",
                    lambda n=n: inproc_step(n, args.baseline_seconds),
                    bench.pids,
                    args,
                )
                for n in sizes
            ]
            runs.append(bus)
            bases.append(base)
            print(f"\n== run {r + 1}\n{report(bus, base)}\n")
        if args.repeat > 1:
            median = report(median_runs(runs), median_runs(bases))
            print(f"== median of {args.repeat} runs\n{median}")
    finally:
        await bench.close()
    return {"machine": machine(), "runs": runs, "baseline": bases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="50,100,200,300,500", help="comma list of N")
    parser.add_argument("--seconds", type=float, default=15.0, help="audio per session per step")
    parser.add_argument("--baseline-seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=1, help="sweeps; >1 also prints medians")
    parser.add_argument(
        "--quiet-limit", type=float, default=15.0, help="%% of a core others may use at a start"
    )
    parser.add_argument("--quiet-wait", type=float, default=120.0, help="max s to wait for it")
    parser.add_argument("--retries", type=int, default=2, help="reruns of a step disturbed so")
    parser.add_argument("--json", type=Path, help="write all figures here")
    parser.add_argument("--dump", type=Path, help="save each step's raw latencies into DIR")
    parser.add_argument("--profile", type=Path, help="py-spy record bridge/engine into DIR")
    args = parser.parse_args()
    if args.profile and not (Path(sys.executable).parent / "py-spy").exists():
        parser.error("--profile needs py-spy in this environment: pip install py-spy")
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # at once, wherever the loop is; asyncio.run then cancels tasks

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    with tempfile.TemporaryDirectory(prefix="funspeech-bench-") as tmp_name:
        tmp = Path(tmp_name)
        procs = ProcessGroup(tmp)
        try:
            result = asyncio.run(run(args, procs, tmp))
        except KeyboardInterrupt:
            print("interrupted; stopping processes", file=sys.stderr)
            sys.exit(130)
        finally:
            procs.stop_all()
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
