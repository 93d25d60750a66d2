"""TTS serving overhead: time to the first audio byte and real-time factor per stream, for N
concurrent streams, three ways in one run, on the light backend (Kokoro + Piper) or CosyVoice:

  in-process  the backend in this process, the engine's own pipeline around it (sentences,
              post-processing, encoder): what the model costs, nothing else
  bus         bus.synthesize() to a real engine process over a real nats-server
  bridge      POST /stream/v1/tts (aiohttp, chunked) through a real bridge process

    python -m bench.tts_latency [--streams 1,4,16] [--rounds 40,5,2] [--voice 英文男]
    # CosyVoice on tiny random-weight models built now (COSYVOICE_DIR and its dependencies,
    # docs/cosyvoice.md), this CPU:
    python -m bench.tts_latency --backend cosyvoice --cosyvoice-dir /opt/CosyVoice --tiny
    # CosyVoice on real weights on a GPU host (directories or ModelScope ids in the cache):
    python -m bench.tts_latency --backend cosyvoice --cosyvoice-dir /opt/CosyVoice \
        --device cuda:0 --sft iic/CosyVoice-300M-SFT --rounds 20,5,2

The engine runs with TTS_MAX_SESSIONS = the largest stream count, so no stream is refused
(beyond an engine's capacity the bus answers 40000005 at once; nothing queues in the bridge);
the in-process backend and the engine each run TTS_LIGHT_SLOTS model runs at a time, so on a
small machine concurrent streams queue for the model in both. Rounds of the three paths
alternate (so drifting load on the machine hits all three) in an order that rotates, each after
SETTLE_S (onnxruntime's threads spin after a run and would slow the next process); each round
runs N streams at once, and figures are per stream. RTF = wall time of a stream / seconds of
audio it got. "added" = bus / bridge minus in-process at the same percentile: the serving
overhead, plus noise that grows with N.

Model time varies by far more than 5 ms between runs on a loaded machine, so the serving cost is
also measured directly: a NATS subscriber in this process on `_INBOX.>` sees each synthesis's
first audio message when the bridge does; "bridge hop" = that moment -> the first HTTP chunk at
the client (from the one-stream rounds, where the two belong together for sure), and "NATS hop"
= half the round trip of a 3,200-byte request/reply on the same nats-server (the engine ->
bridge leg is one such hop). The bridge process's CPU time per stream is read from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import nats
from nats.aio.client import Client as Nats
from nats.aio.msg import Msg

from bus.client import Bus
from bus.schemas import TtsParams
from bus.subjects import EVENT_HEADER
from engines.__main__ import pool_size
from engines.tts.base import SynthesisOptions, TtsBackend
from engines.tts.encode import make_encoder
from engines.tts.light import LightTtsBackend
from engines.tts.post import PostProcessor, nls_speed
from engines.tts.text import split_sentences
from funspeech.logs import settle_heap
from funspeech.settings import Settings
from tests.harness import BridgeProcess, EngineProcess, NatsServer, wait_engines

TEXT = "The quick brown fox jumps over the lazy dog. It was a sunny day by the river."
TEXT_ZH = "收到好友从远方寄来的生日礼物，那份意外的惊喜与深深的祝福让我心中充满了甜蜜的快乐。"
PATHS = ("in-process", "bus", "bridge")
# between paths: onnxruntime's threads spin for a while after a run, and would slow whichever
# path (process) comes next
SETTLE_S = 0.3


@dataclass
class Job:
    """What every stream asks for: the backend's own rate, so no path resamples."""

    text: str
    voice: str
    rate: int

    def audio_s(self, size: int) -> float:
        return size / (self.rate * 2)


@dataclass
class Stream:
    first_ms: float
    total_s: float
    audio_s: float

    @property
    def rtf(self) -> float:
        return self.total_s / self.audio_s if self.audio_s else float("inf")


# ---------------------------------------------------------------- the three paths


async def in_process(backend: TtsBackend, job: Job) -> Stream:
    """The engine's pipeline (engines/tts_engine.py Speaker) without the engine around it."""
    began = time.perf_counter()
    post = PostProcessor(backend.sample_rate, job.rate)
    encoder = make_encoder("pcm", job.rate)
    options = SynthesisOptions(speed=nls_speed(0))
    first, size = 0.0, 0
    for sentence in split_sentences(job.text):
        async for piece in backend.synthesize(sentence, job.voice, options):
            data = encoder.feed(post.process(piece.audio))
            if data and not first:
                first = time.perf_counter() - began
            size += len(data)
    size += len(encoder.feed(post.flush()) + encoder.finish())
    return Stream(first * 1000, time.perf_counter() - began, job.audio_s(size))


async def over_bus(bus: Bus, job: Job) -> Stream:
    began = time.perf_counter()
    first, size = 0.0, 0
    params = TtsParams(voice=job.voice, format="pcm", sample_rate=job.rate)
    async for message in bus.synthesize(job.text, params, timeout=120):
        if message.kind == "audio":
            if not first:
                first = time.perf_counter() - began
            size += len(message.audio)
    return Stream(first * 1000, time.perf_counter() - began, job.audio_s(size))


async def over_bridge(http: aiohttp.ClientSession, url: str, job: Job) -> Stream:
    began = time.perf_counter()
    first, size = 0.0, 0
    body = {"text": job.text, "voice": job.voice, "format": "pcm", "sample_rate": job.rate}
    async with http.post(f"{url}/stream/v1/tts", json=body) as r:
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {await r.text()}")
        async for chunk in r.content.iter_any():
            if not first:
                first = time.perf_counter() - began
            size += len(chunk)
    return Stream(first * 1000, time.perf_counter() - began, job.audio_s(size))


# ---------------------------------------------------------------- figures


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of fewer than 100 values is the largest)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def row(path: str, n: int, streams: list[Stream], base: list[Stream] | None) -> str:
    firsts = [s.first_ms for s in streams]
    rtfs = [s.rtf for s in streams]
    f50, f99 = statistics.median(firsts), pct(firsts, 99)
    added = "–"
    if base is not None:
        b = [s.first_ms for s in base]
        added = f"{f50 - statistics.median(b):+.1f} / {f99 - pct(b, 99):+.1f}"
    return (
        f"| {path} | {n} | {len(streams)} | {f50:.1f} | {f99:.1f} | {added} | "
        f"{statistics.median(rtfs):.2f} | {pct(rtfs, 99):.2f} |"
    )


class Tap:
    """A NATS subscriber on every inbox: when each synthesis's first audio message arrived."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}

    async def on_msg(self, msg: Msg) -> None:
        if (msg.headers or {}).get(EVENT_HEADER) == "audio" and msg.subject not in self.first:
            self.first[msg.subject] = time.perf_counter()


async def nats_hop_ms(nc: Nats, samples: int = 300) -> list[float]:
    """Half the round trip of a 3,200-byte request/reply (one NATS hop)."""

    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    sub = await nc.subscribe("bench.echo", cb=echo)
    hops = []
    try:
        for _ in range(samples):
            began = time.perf_counter()
            await nc.request("bench.echo", bytes(3200), timeout=5)
            hops.append((time.perf_counter() - began) * 500)
    finally:
        await sub.unsubscribe()
    return hops


async def bridge_round(
    http: aiohttp.ClientSession, url: str, job: Job, n: int, tap: Tap
) -> tuple[list[Stream], list[float]]:
    """N REST streams at once; for one stream also its hop from the bridge's inbox to the
    client (with more, which inbox is whose is not known)."""
    tap.first.clear()
    began = time.perf_counter()
    streams = await asyncio.gather(*(over_bridge(http, url, job) for _ in range(n)))
    if n != 1 or len(tap.first) != 1:
        return list(streams), []
    (on_nats,) = tap.first.values()
    return list(streams), [(began + streams[0].first_ms / 1000 - on_nats) * 1000]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} | {pct(values, 99):.2f} | {len(values)}"


async def run(
    args: argparse.Namespace, url: str, nats_url: str, backend: TtsBackend, pids: list[int]
) -> None:
    counts = [int(x) for x in args.streams.split(",")]
    rounds = [int(x) for x in args.rounds.split(",")]
    job = Job(args.text, args.voice, backend.sample_rate)
    bus = await Bus.connect(nats_url)
    tap, tap_nc = Tap(), await nats.connect(nats_url)
    await tap_nc.subscribe("_INBOX.>", cb=tap.on_msg)
    connector = aiohttp.TCPConnector(limit=0)
    hops: dict[int, list[float]] = {}
    used: dict[int, float] = {}  # bridge process CPU seconds in its rounds
    print("| path | streams | n | first audio p50 ms | p99 ms | added p50 / p99 ms "
          "| RTF p50 | RTF p99 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    try:
        await bus.directory.wait_for(1, 60, task="tts")
        async with aiohttp.ClientSession(connector=connector) as http:
            # warm every path once (first requests build caches and connections)
            await in_process(backend, job)
            await over_bus(bus, job)
            await over_bridge(http, url, job)
            for n, r in zip(counts, rounds, strict=True):
                got: dict[str, list[Stream]] = {"in-process": [], "bus": [], "bridge": []}
                hops[n], used[n] = [], 0.0
                for i in range(r):
                    for path in PATHS[i % 3 :] + PATHS[: i % 3]:  # each follows each
                        await asyncio.sleep(SETTLE_S)
                        if path == "in-process":
                            runs = [in_process(backend, job) for _ in range(n)]
                            got[path] += await asyncio.gather(*runs)
                        elif path == "bus":
                            runs = [over_bus(bus, job) for _ in range(n)]
                            got[path] += await asyncio.gather(*runs)
                        else:
                            before = cpu_s(pids[1])
                            streams, hop = await bridge_round(http, url, job, n, tap)
                            used[n] += cpu_s(pids[1]) - before
                            got[path] += streams
                            hops[n] += hop
                base = got["in-process"]
                print(row("in-process", n, base, None))
                print(row("bus", n, got["bus"], base))
                print(row("bridge (REST)", n, got["bridge"], base), flush=True)
        print("\n| measured directly | streams | p50 ms | p99 ms | n |\n|---|---|---|---|---|")
        print(f"| NATS hop (3,200-byte message) | – | {spread(await nats_hop_ms(tap_nc))} |")
        for n, values in hops.items():
            if values:
                print(f"| bridge hop: first audio on NATS -> client | {n} | {spread(values)} |")
        print("\n| streams | bridge process CPU ms per stream (whole stream) |\n|---|---|")
        for n, seconds in used.items():
            print(f"| {n} | {seconds * 1000 / (n * rounds[counts.index(n)]):.1f} |")
    finally:
        await bus.close()
        await tap_nc.close()


def light(args: argparse.Namespace, capacity: int) -> tuple[TtsBackend, dict[str, str]]:
    """The light backend here and the engine's settings for it."""
    settings = Settings(data_dir=args.data_dir, tts_max_sessions=capacity, _env_file=None)
    backend = LightTtsBackend(settings, "cpu", ThreadPoolExecutor(pool_size(settings, "tts")))
    backend.load()
    print(f"light backend: {backend.slots} slot(s) x {backend.threads} thread(s), own capacity "
          f"{backend.capacity}; engine TTS_MAX_SESSIONS={capacity}")  # fmt: skip
    return backend, {}


def cosyvoice(
    args: argparse.Namespace, capacity: int, tmp: Path
) -> tuple[TtsBackend, dict[str, str]]:
    """CosyVoice here (models from --sft/--clone, or tiny ones built now) and the engine's
    settings for the same models and device."""
    from engines.tts.cosyvoice import CosyVoiceBackend

    sft, clone = args.sft, args.clone
    if args.tiny:
        from tests.cosyvoice_tiny import build_all

        tiny = build_all(tmp / "tiny", args.cosyvoice_dir)
        sft, clone = str(tiny["v1"]), str(tiny["v3"])
    values = {
        "tts_backend": "cosyvoice",
        "cosyvoice_dir": args.cosyvoice_dir,
        "sft_model_id": sft,
        "cosyvoice3_model_id": clone,
        "clone_model_version": "cosyvoice3",
        "tts_max_sessions": str(capacity),
    }
    settings = Settings(_env_file=None, **values)  # type: ignore[arg-type]
    pool = ThreadPoolExecutor(pool_size(settings, "tts"))  # as the engine's
    backend = CosyVoiceBackend(settings, args.device, pool)
    backend.load()
    print(f"CosyVoice on {args.device}: {backend.model_paths()}; capacity {backend.capacity}")
    return backend, {k.upper(): v for k, v in values.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["light", "cosyvoice"], default="light")
    p.add_argument("--streams", default="1,4,16", help="concurrent streams per round")
    p.add_argument("--rounds", default="40,5,2", help="rounds per stream count")
    p.add_argument("--voice", default="", help="default 英文男 (light) / 中文女 (cosyvoice)")
    p.add_argument("--text", default="", help="default an English / a Chinese sentence")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--cosyvoice-dir", default=os.environ.get("COSYVOICE_DIR", ""))
    p.add_argument("--device", default="cpu", help="cosyvoice: cpu or cuda:N")
    p.add_argument("--tiny", action="store_true", help="cosyvoice: tiny models built now")
    p.add_argument("--sft", default="iic/CosyVoice-300M-SFT", help="v1 SFT dir or id")
    p.add_argument("--clone", default="FunAudioLLM/Fun-CosyVoice3-0.5B-2512", help="v3 dir/id")
    args = p.parse_args()
    chinese = args.backend == "cosyvoice"
    args.voice = args.voice or ("中文女" if chinese else "英文男")
    args.text = args.text or (TEXT_ZH if chinese else TEXT)
    capacity = max(int(x) for x in args.streams.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        if args.backend == "cosyvoice":
            backend, env = cosyvoice(args, capacity, logs)
        else:
            backend, env = light(args, capacity)
        settle_heap()  # as the engine does after loading: no full GC passes over the models
        print(f"{os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}")
        nats = NatsServer(logs / "jetstream").start()
        engine = EngineProcess(nats.url, logs, device=args.device, task="tts",
                               **{"TTS_MAX_SESSIONS": str(capacity), **env})  # fmt: skip
        engine.start()
        bridge = BridgeProcess(nats.url, logs).start()
        try:
            wait_engines(nats.url, 1, timeout=600, procs=[engine], task="tts")
            asyncio.run(run(args, bridge.url, nats.url, backend, [engine.pid, bridge.pid]))
        finally:
            bridge.stop()
            engine.stop()
            nats.stop()
            backend.close()


if __name__ == "__main__":
    main()
