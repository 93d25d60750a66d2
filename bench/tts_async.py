"""Async long-text TTS throughput: jobs per minute and characters per second with 1 and 2 light
TTS engines behind one bridge, and how fast a client hears back after submitting.

    python -m bench.tts_async [--engines 1,2] [--jobs 4] [--chars 1500] [--sessions 0]
                              [--threads 0]

Each run starts its own nats-server (JetStream), the engines and a bridge, waits for the
engines, submits every job at once over HTTP (NLS body, English on 英文男 = Piper, wav 16 kHz)
and polls each until it ends. Reported per engine count:
  submit      POST answered (task_id), p50 / max
  first poll  submit start -> the first GET answered, p50 / max
  wall        first submit -> last job SUCCESS
  jobs/min, chars/s, audio s/s (x real time)
  engine CPU  CPU seconds of the engine processes per audio second (independent of other load;
              on N cores the best wall figure is that / N)
A markdown row per engine count is printed at the end (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from tests.harness import BridgeProcess, EngineProcess, NatsServer, wait_engines
from tests.tts_async_client import PATH, finished, poll, request, sentences_text

CLK_TCK = 100


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


async def run_jobs(url: str, jobs: int, chars: int) -> dict[str, float]:
    texts = []
    for i in range(jobs):
        text = sentences_text(chars // 40 + 1, start=1000 * i)
        texts.append(text[:chars].rsplit(".", 1)[0] + ".")
    submits: list[float] = []
    first_polls: list[float] = []

    async def one(http: aiohttp.ClientSession, text: str) -> float:
        started = time.perf_counter()
        async with http.post(url + PATH, json=request(text, sample_rate=16000)) as r:
            answer = await r.json()
            assert r.status == 200, answer
        submits.append(time.perf_counter() - started)
        task_id = answer["data"]["task_id"]
        status, _ = await poll(http, url, task_id)
        assert status == 200
        first_polls.append(time.perf_counter() - started)
        done = await finished(http, url, task_id, 3600)
        assert done["error_message"] == "SUCCESS", done
        return float(done["data"]["duration_ms"]) / 1000

    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        audio = await asyncio.gather(*(one(http, t) for t in texts))
        wall = time.perf_counter() - started
    total_chars = sum(len(t) for t in texts)
    return {
        "wall": wall,
        "jobs_min": jobs / wall * 60,
        "chars_s": total_chars / wall,
        "audio_s": sum(audio),
        "xrt": sum(audio) / wall,
        "submit_p50": statistics.median(submits),
        "submit_max": max(submits),
        "poll_p50": statistics.median(first_polls),
        "poll_max": max(first_polls),
    }


def bench(count: int, jobs: int, chars: int, sessions: int, threads: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        server = NatsServer(tmp / "jetstream").start()
        env = {"TTS_MAX_SESSIONS": str(sessions)} if sessions else {}
        if threads:
            env["TTS_LIGHT_CPU_THREADS"] = str(threads)
        engines = [EngineProcess(server.url, tmp, task="tts", **env) for _ in range(count)]
        bridge = None
        try:
            for engine in engines:
                engine.start()
            wait_engines(server.url, count, timeout=300, procs=list(engines), task="tts")
            bridge = BridgeProcess(server.url, tmp).start()
            cpu0 = sum(cpu_seconds(e.pid) for e in engines)
            result = asyncio.run(run_jobs(bridge.url, jobs, chars))
            cpu = sum(cpu_seconds(e.pid) for e in engines) - cpu0
            result["cpu_per_audio_s"] = cpu / result["audio_s"]
            found = [re.search(r"capacity=(\d+)", e.log()) for e in engines]
            result["capacity"] = min(int(m.group(1)) for m in found if m)
            return result
        finally:
            if bridge is not None:
                bridge.stop()
            for engine in engines:
                engine.stop()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", default="1,2", help="engine counts to run, comma list")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--chars", type=int, default=1500, help="characters per job")
    parser.add_argument("--sessions", type=int, default=0, help="TTS_MAX_SESSIONS; 0 = auto")
    parser.add_argument(
        "--threads", type=int, default=0, help="TTS_LIGHT_CPU_THREADS per engine; 0 = auto"
    )
    args = parser.parse_args()
    rows = []
    for count in (int(c) for c in args.engines.split(",")):
        r = bench(count, args.jobs, args.chars, args.sessions, args.threads)
        print(f"{count} engine(s): {r}", flush=True)
        threads = args.threads or "auto"
        rows.append(
            f"| {count} × {threads} | {r['capacity']:.0f} | {args.jobs} × {args.chars} | "
            f"{r['wall']:.1f} | {r['jobs_min']:.2f} | {r['chars_s']:.0f} | {r['xrt']:.1f} | "
            f"{r['cpu_per_audio_s']:.3f} | "
            f"{r['submit_p50'] * 1000:.0f} / {r['submit_max'] * 1000:.0f} | "
            f"{r['poll_p50'] * 1000:.0f} / {r['poll_max'] * 1000:.0f} |"
        )
    print("| engines × threads | capacity | jobs × chars | wall s | jobs/min | chars/s | "
          "audio s/s | engine CPU s per audio s | submit ms p50 / max | "
          "first poll ms p50 / max |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---:|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
