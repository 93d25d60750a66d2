"""Paced realtime sessions through the real bridge, bus and FunASR engine processes.

    python bench/funasr_sessions.py                             # tiny models, cpu, 24..120
    python bench/funasr_sessions.py --sessions 48,96 --seconds 30 --engines 2
    python bench/funasr_sessions.py --device cuda:0 --models-dir settings --sessions 32,64,128
    python bench/funasr_sessions.py --sessions 64,96 --engine-env FUNASR_CHUNK_MS=240

It starts a nats-server (ephemeral port), --engines engine processes (`python -m engines`,
ASR_BACKEND=funasr) and one bridge process (`python -m bridge`), all on 127.0.0.1. The load
client is this one asyncio process: raw aiohttp WebSockets speaking the NLS SpeechTranscriber
frames, N sessions at a time, each sending 16 kHz s16le audio in 100 ms chunks every 100 ms
(starts spread over --stagger s). Each session's audio is the speech clips of tests/data in a
rotated order with 1.0-1.6 s pauses (so VAD end points and 2-pass finals happen), cut inside
speech at the end (no trailing silence), then StopTranscription.

Per N it reports, over all sessions:
  partial lag    TranscriptionResultChanged arrival - the moment the audio it covers (its `time`)
                 had been sent; p50/p99. Pure processing + transport delay.
  growth         p50 partial lag of the last third of the run - of the first third.
  end lag        SentenceEnd (during the stream) arrival - its `time`; includes the VAD's
                 max_sentence_silence (800 ms) wait and the chunk (FUNASR_CHUNK_MS) granularity.
  partials/s     TranscriptionResultChanged per second of audio, mean over the sessions.
  Stop->final    StopTranscription sent -> TranscriptionCompleted received; p50/p99.
  tail           sessions whose last SentenceEnd `time` is the end of their audio (the tail
                 after the last 600 ms chunk was decoded, not dropped).
  CPU            utime+stime from /proc/<pid>/stat while all N stream: engine(s), bridge, in %
                 of one core per live stream; the load client's own share; and what other
                 processes used meanwhile (each step first waits for a quiet machine).
An N is KEPT UP when every session completes without error with its tail flushed, p99
Stop->final <= 1.0 s, p99 partial lag <= 1.0 s and growth <= 0.25 s; otherwise the engine
FELL BEHIND. Every wait is bounded; the child processes are stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
import wave
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # also run as a script: python bench/funasr_sessions.py

from tests.harness import (  # noqa: E402
    NatsServer,
    ProcessGroup,
    free_port,
    nls_frame,
    nls_order_errors,
    wait_engines,
    wait_port,
)

DATA = ROOT / "tests" / "data"
RATE = 16000
CHUNK_MS = 100
CHUNK_BYTES = 2 * RATE * CHUNK_MS // 1000
CLK_TCK = os.sysconf("SC_CLK_TCK")
FINAL_LIMIT_S = 1.0
LAG_LIMIT_S = 1.0
GROWTH_LIMIT_S = 0.25


# ---------------------------------------------------------------- audio


def clips() -> list[np.ndarray]:
    out = []
    for path in sorted(DATA.glob("*.wav")):
        with wave.open(str(path)) as w:
            if w.getframerate() == RATE and w.getnchannels() == 1 and w.getsampwidth() == 2:
                out.append(np.frombuffer(w.readframes(w.getnframes()), dtype="<i2"))
    if not out:
        raise RuntimeError(f"no 16 kHz mono wav clips in {DATA}")
    return out


def session_audio(index: int, seconds: float, pool: list[np.ndarray]) -> bytes:
    """Clips in a rotated order with pauses of 1.0-1.6 s, cut inside speech (not at a word's
    onset) at about `seconds`."""
    rng = np.random.default_rng(index)
    parts, n, k = [], 0, index
    target = int(seconds * RATE)
    while n < target + RATE:
        clip = pool[k % len(pool)]
        gap = np.zeros(int(rng.uniform(1.0, 1.6) * RATE), np.int16)
        parts += [clip, gap]
        n += len(clip) + len(gap)
        k += 1
    audio = np.concatenate(parts)
    frames = audio[: len(audio) // 160 * 160].astype(np.float32).reshape(-1, 160)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    quiet = np.convolve(rms < 100, np.ones(50), "full")[: len(rms)]  # quiet 10 ms frames in 0.5 s
    inside = np.flatnonzero((rms > 1500) & (quiet < 5))  # loud, well inside a stretch of speech
    cut = int(inside[min(np.searchsorted(inside, target // 160), len(inside) - 1)])
    return audio[: cut * 160 + 80].astype("<i2").tobytes()  # ends inside a loud frame


# ---------------------------------------------------------------- processes


class Stack:
    """nats-server + engine process(es) + bridge process; stop() ends them all."""

    def __init__(self, args: argparse.Namespace, models: dict[str, str], log_dir: Path) -> None:
        self.args = args
        self.models = models
        self.log_dir = log_dir
        self.procs = ProcessGroup(log_dir)
        self.nats_url = ""
        self.bridge_url = ""

    def start(self) -> None:
        nats_server = NatsServer(self.log_dir / "js", self.log_dir).start(new_session=True)
        self.procs.add("nats", nats_server)
        self.nats_url = nats_server.url
        base = {**os.environ, "NATS_URL": self.nats_url, "LOG_FILE": "", "LOG_LEVEL": "WARNING"}
        engine_env = base | {
            "ASR_BACKEND": "funasr",
            "ASR_MAX_SESSIONS": str(self.args.capacity),
            "ENGINE_DRAIN_TIMEOUT": "2",
            **self.models,
            **dict(kv.split("=", 1) for kv in self.args.engine_env),
        }
        for i in range(self.args.engines):
            self.procs.start(f"engine{i}", [sys.executable, "-m", "engines", "--device",
                                            self.args.device], engine_env)  # fmt: skip
        bport = free_port()
        self.procs.start(
            "bridge",
            [sys.executable, "-m", "bridge"],
            base | {"HOST": "127.0.0.1", "PORT": str(bport), "ASR_IDLE_TIMEOUT": "30"},
        )
        wait_port(bport, 30, self.procs.procs["bridge"])
        self.bridge_url = f"ws://127.0.0.1:{bport}/ws/v1"
        engines = [p for n, p in self.procs.procs.items() if n.startswith("engine")]
        wait_engines(self.nats_url, self.args.engines, 180, engines)

    def pids(self, prefix: str) -> list[int]:
        return self.procs.pids(prefix)

    def check(self) -> None:
        self.procs.check()

    def stop(self) -> None:
        self.procs.stop_all(15)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_seconds() -> float:
    """CPU seconds all processes on the machine have used (busy ticks of /proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:8]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


def other_load(ours: list[int], seconds: float = 1.0) -> float:
    """Cores used by processes not ours over `seconds` (the machine may be shared)."""
    m0, c0 = machine_seconds(), sum(cpu_seconds(p) for p in ours)
    time.sleep(seconds)
    return max(0.0, machine_seconds() - m0 - (sum(cpu_seconds(p) for p in ours) - c0)) / seconds


def wait_quiet(ours: list[int], limit: float, max_wait: float) -> float:
    """Wait (at most max_wait s) until other processes use < limit cores; the last figure."""
    start = time.monotonic()
    said = -30.0
    while True:
        other = other_load(ours)
        waited = time.monotonic() - start
        if other < limit or waited > max_wait:
            if waited > 2:
                print(
                    f"     waited {waited:.0f} s for a quiet machine (others: {other * 100:.0f}%)"
                )
            return other
        if waited - said >= 30:
            print(f"     waiting for a quiet machine: others use {other * 100:.0f}% of a core")
            said = waited


# ---------------------------------------------------------------- the load client


def frame(name: str, task_id: str, payload: dict[str, Any] | None = None) -> str:
    return nls_frame(name, task_id, payload, appkey="bench")


class Session:
    def __init__(self, pcm: bytes, offset: float) -> None:
        self.pcm = pcm
        self.audio_ms = len(pcm) // 2 * 1000 // RATE
        self.offset = offset
        self.task_id = uuid.uuid4().hex
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.t0 = 0.0  # wall time at which audio ms 0 is "now"; ms m was sent at t0 + m/1000
        self.stop_at = 0.0
        self.completed_at = 0.0
        self.partials: list[tuple[float, int]] = []  # (arrival, audio ms)
        self.ends: list[tuple[float, int]] = []
        self.names = ["TranscriptionStarted"]  # every event, checked for NLS order at the end
        self.failure: str | None = None

    async def open(self, http: aiohttp.ClientSession, url: str) -> None:
        try:
            async with asyncio.timeout(20):
                self.ws = await http.ws_connect(url)
                params = {"format": "pcm", "sample_rate": RATE, "enable_intermediate_result": True}
                await self.ws.send_str(frame("StartTranscription", self.task_id, params))
                msg = await self.ws.receive()
                header = (
                    json.loads(msg.data)["header"] if msg.type == aiohttp.WSMsgType.TEXT else {}
                )
                if header.get("name") != "TranscriptionStarted":
                    self.failure = f"start: {header.get('status_text', msg.type.name)}"
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            self.failure = f"start: {exc!r}"

    async def send(self, start: float) -> None:
        ws = self.ws
        assert ws is not None
        self.t0 = start + self.offset
        n = (len(self.pcm) + CHUNK_BYTES - 1) // CHUNK_BYTES
        for k in range(n):
            chunk = self.pcm[k * CHUNK_BYTES : (k + 1) * CHUNK_BYTES]
            due = self.t0 + (k * CHUNK_BYTES + len(chunk)) / 2 / RATE  # its last sample exists
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if ws.closed:
                return
            await ws.send_bytes(chunk)
        self.stop_at = time.monotonic()
        await ws.send_str(frame("StopTranscription", self.task_id))

    async def receive(self, limit: float) -> None:
        ws = self.ws
        assert ws is not None
        try:
            async with asyncio.timeout(limit):
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    now = time.monotonic()
                    data = json.loads(msg.data)
                    name, payload = data["header"]["name"], data.get("payload") or {}
                    self.names.append(name)
                    if name == "TranscriptionResultChanged":
                        self.partials.append((now, payload["time"]))
                    elif name == "SentenceEnd":
                        self.ends.append((now, payload["time"]))
                    elif name == "TranscriptionCompleted":
                        self.completed_at = now
                        if errors := nls_order_errors(self.names):
                            self.failure = f"event order: {'; '.join(errors[:3])}"
                        return
                    elif name == "TaskFailed":
                        self.failure = data["header"]["status_text"]
                        return
        except TimeoutError:
            self.failure = "no TranscriptionCompleted in time"
        finally:
            await ws.close()


class Heartbeats:
    """The engines' latest load figures (their heartbeat: batch counts per scheduler)."""

    def __init__(self) -> None:
        self.load: dict[str, dict[str, float]] = {}
        self.nc: Any = None

    async def start(self, url: str) -> None:
        import nats

        from bus.schemas import EngineInfo, decode
        from bus.subjects import DEFAULT as SUBJECTS

        async def on(msg: Any) -> None:
            info = decode(EngineInfo, msg.data)
            self.load[info.id] = dict(info.load)

        self.nc = await nats.connect(url, name="bench-heartbeats")
        await self.nc.subscribe(SUBJECTS.heartbeat, cb=on)

    def snapshot(self) -> dict[str, float]:
        """Batches and batched steps per scheduler, summed over the engines."""
        total: dict[str, float] = {}
        for load in self.load.values():
            for name in ("vad", "stream", "final"):
                batches = load.get(f"{name}_batches", 0.0)
                items = load.get(f"{name}_mean_batch", 0.0) * batches
                total[f"{name}_batches"] = total.get(f"{name}_batches", 0.0) + batches
                total[f"{name}_items"] = total.get(f"{name}_items", 0.0) + items
        return total

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()


def mean_batch(before: dict[str, float], after: dict[str, float], name: str) -> float:
    batches = after.get(f"{name}_batches", 0.0) - before.get(f"{name}_batches", 0.0)
    if batches <= 0:
        return float("nan")
    return (after.get(f"{name}_items", 0.0) - before.get(f"{name}_items", 0.0)) / batches


async def run_step(stack: Stack, n: int, args: argparse.Namespace) -> dict[str, Any]:
    hb = Heartbeats()
    await hb.start(stack.nats_url)
    try:
        return await _run_step(stack, n, args, hb)
    finally:
        await hb.close()


async def _run_step(
    stack: Stack, n: int, args: argparse.Namespace, hb: Heartbeats
) -> dict[str, Any]:
    pool = clips()
    ours = [*stack.procs.pids(), os.getpid()]
    step_m0, step_c0, step_t0 = (
        machine_seconds(),
        sum(cpu_seconds(p) for p in ours),
        time.monotonic(),
    )
    sessions = [
        Session(session_audio(i, args.seconds, pool), args.stagger * i / n) for i in range(n)
    ]
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        sem = asyncio.Semaphore(32)

        async def opened(s: Session) -> None:
            async with sem:
                await s.open(http, stack.bridge_url)

        await asyncio.gather(*(opened(s) for s in sessions))
        live = [s for s in sessions if s.failure is None]
        start = time.monotonic() + 0.5
        limit = args.seconds + args.stagger + 60
        receivers = [asyncio.create_task(s.receive(limit)) for s in live]
        senders = [asyncio.create_task(s.send(start)) for s in live]
        # CPU while every session streams: from the last start to the first stop
        await asyncio.sleep(start + args.stagger + 0.5 - time.monotonic())
        pids = {"engine": stack.pids("engine"), "bridge": stack.pids("bridge")}
        pids["client"] = [os.getpid()]
        pids["nats"] = stack.pids("nats")
        c0 = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
        m0, w0 = machine_seconds(), time.monotonic()
        load0 = hb.snapshot()
        first_stop = start + min(s.offset + s.audio_ms / 1000 for s in live)
        await asyncio.sleep(max(1.0, first_stop - 0.2 - time.monotonic()))
        wall = time.monotonic() - w0
        cpu = {k: (sum(cpu_seconds(p) for p in v) - c0[k]) / wall for k, v in pids.items()}
        cpu["other"] = max(0.0, (machine_seconds() - m0) / wall - sum(cpu.values()))
        await asyncio.sleep(0.6)  # one more heartbeat
        load1 = hb.snapshot()
        await asyncio.gather(*senders)
        await asyncio.gather(*receivers)
    step_wall = time.monotonic() - step_t0
    ours_cpu = sum(cpu_seconds(p) for p in ours) - step_c0
    cpu["other_step"] = max(0.0, (machine_seconds() - step_m0 - ours_cpu) / step_wall)
    r = summarize(sessions, n, cpu, args)
    r["vad_batch"] = mean_batch(load0, load1, "vad")
    r["stream_batch"] = mean_batch(load0, load1, "stream")
    return r


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summarize(
    sessions: list[Session], n: int, cpu: dict[str, float], args: argparse.Namespace
) -> dict[str, Any]:
    ok = [s for s in sessions if s.failure is None and s.completed_at]
    lags: list[tuple[float, float]] = []  # (audio s, lag s)
    end_lags, finals = [], []
    tails = 0
    for s in ok:
        lags += [(ms / 1000, t - s.t0 - ms / 1000) for t, ms in s.partials]
        end_lags += [t - s.t0 - ms / 1000 for t, ms in s.ends if t < s.stop_at]
        finals.append(s.completed_at - s.stop_at)
        tails += bool(s.ends) and s.ends[-1][1] == s.audio_ms
    lag = [x for _, x in lags]
    third = args.seconds / 3
    early = [x for a, x in lags if a < third]
    late = [x for a, x in lags if a >= 2 * third]
    growth = pct(late, 50) - pct(early, 50) if early and late else float("nan")
    r = {
        "n": n,
        "ok": len(ok),
        "failures": sorted({s.failure for s in sessions if s.failure}),
        "lag_p50": pct(lag, 50),
        "lag_p99": pct(lag, 99),
        "growth": growth,
        "end_p50": pct(end_lags, 50),
        "end_p99": pct(end_lags, 99),
        "final_p50": pct(finals, 50),
        "final_p99": pct(finals, 99),
        "tails": tails,
        "partials_per_s": sum(len(s.partials) for s in ok)
        * 1000
        / max(1, sum(s.audio_ms for s in ok)),
        "cpu_engine": cpu["engine"] * 100 / n,
        "cpu_bridge": cpu["bridge"] * 100 / n,
        "cpu_client": cpu["client"] * 100,
        "cpu_nats": cpu["nats"] * 100,
        "cpu_engine_total": cpu["engine"] * 100,
        "cpu_other": max(cpu["other"], cpu["other_step"]) * 100,
    }
    r["kept_up"] = bool(
        r["ok"] == n
        and tails == n
        and r["final_p99"] <= FINAL_LIMIT_S
        and r["lag_p99"] <= LAG_LIMIT_S
        and not growth > GROWTH_LIMIT_S
    )
    return r


# ---------------------------------------------------------------- report


HEAD = (
    f"{'N':>4} {'ok':>4} {'lag p50':>8} {'lag p99':>8} {'growth':>7} {'end p50':>8} "
    f"{'end p99':>8} {'final p50':>9} {'final p99':>9} {'tail':>7} {'eng %/s':>8} "
    f"{'brg %/s':>8} {'eng %':>6} {'client %':>8} {'other %':>7} {'batch':>9} {'part/s':>6}  "
    "verdict"
)


def row(r: dict[str, Any]) -> str:
    ms = lambda v: f"{v * 1000:8.0f}"  # noqa: E731
    return (
        f"{r['n']:4d} {r['ok']:4d} {ms(r['lag_p50'])} {ms(r['lag_p99'])} "
        f"{r['growth'] * 1000:7.0f} {ms(r['end_p50'])} {ms(r['end_p99'])} "
        f"{r['final_p50'] * 1000:9.0f} {r['final_p99'] * 1000:9.0f} "
        f"{r['tails']:3d}/{r['n']:<3d} {r['cpu_engine']:8.2f} {r['cpu_bridge']:8.2f} "
        f"{r['cpu_engine_total']:6.0f} {r['cpu_client']:8.0f} {r['cpu_other']:7.0f} "
        f"{r.get('vad_batch', float('nan')):4.1f}/{r.get('stream_batch', float('nan')):<4.1f} "
        f"{r['partials_per_s']:6.2f}  {'kept up' if r['kept_up'] else 'FELL BEHIND'}"
    )


def model_env(args: argparse.Namespace, tmp: str) -> dict[str, str]:
    if args.models_dir == "settings":
        return {}  # FUNASR_REALTIME_MODEL etc. from the environment
    root = Path(args.models_dir or tmp)
    if not all((root / r / "model.pt").is_file() for r in ("streaming", "offline", "vad", "punc")):
        from tests.funasr_tiny import build_tiny_models

        build_tiny_models(root)
    return {
        "FUNASR_REALTIME_MODEL": str(root / "streaming"),
        "FUNASR_OFFLINE_MODEL": str(root / "offline"),
        "VAD_MODEL": str(root / "vad"),
        "PUNC_MODEL": str(root / "punc"),
        "MODELSCOPE_PATH": str(Path(tmp) / "modelscope"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sessions", default="24,48,72,96,120", help="comma list of N")
    p.add_argument("--seconds", type=float, default=30.0, help="audio per session")
    p.add_argument("--stagger", type=float, default=1.0, help="session starts spread over s")
    p.add_argument("--engines", type=int, default=1, help="engine processes")
    p.add_argument("--device", default="cpu", help="cpu | cuda:0 ...")
    p.add_argument("--capacity", type=int, default=1000, help="ASR_MAX_SESSIONS per engine")
    p.add_argument(
        "--models-dir",
        default="",
        help="dir with streaming/ offline/ vad/ punc/ (built there if missing); 'settings' = "
        "models from FUNASR_REALTIME_MODEL etc.; default: tiny models in a temp dir",
    )
    p.add_argument(
        "--engine-env", action="append", default=[], help="extra KEY=VALUE for the engines"
    )
    p.add_argument(
        "--quiet", type=float, default=0.15, help="wait until others use < this many cores"
    )
    p.add_argument("--quiet-wait", type=float, default=300, help="wait that long at most (s)")
    p.add_argument("--stop-after-fail", action="store_true", help="stop at the first FELL BEHIND")
    p.add_argument("--json", default="", help="also write the results here")
    args = p.parse_args()
    ns = [int(x) for x in args.sessions.split(",") if x.strip()]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(args, model_env(args, tmp), Path(tmp))
        try:
            stack.start()
            print(f"bench: {os.cpu_count()} CPUs, device {args.device}, {args.engines} engine(s), "
                  f"{args.seconds:g} s per session, logs {tmp}")  # fmt: skip
            print("engine pids:", " ".join(map(str, stack.pids("engine"))))
            if args.engine_env:
                print("engine env:", " ".join(args.engine_env))
            print(HEAD)
            ours = [*stack.procs.pids(), os.getpid()]
            for n in ns:
                stack.check()
                wait_quiet(ours, args.quiet, args.quiet_wait)
                r = asyncio.run(run_step(stack, n, args))
                results.append(r)
                print(row(r), flush=True)
                if r["failures"]:
                    print("     failures:", "; ".join(r["failures"])[:300])
                if args.stop_after_fail and not r["kept_up"]:
                    break
                time.sleep(2.0)  # let the engine settle between steps
        finally:
            stack.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(
        f"\nkept up = all sessions complete with the tail flushed, p99 Stop->final <= "
        f"{FINAL_LIMIT_S:g} s, p99 partial lag <= {LAG_LIMIT_S:g} s, growth <= "
        f"{GROWTH_LIMIT_S:g} s.\neng/brg %/s: % of one core per live stream; eng %: engine "
        "total; other %: processes not ours (a shared machine), the larger of the streaming window "
        "and the whole step; batch: mean VAD / streaming steps per batched call."
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
