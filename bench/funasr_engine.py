"""FunASR engine benchmark: per-chunk compute and paced realtime sessions, batched vs unbatched.

    python bench/funasr_engine.py                       # tiny random-weight models, cpu
    python bench/funasr_engine.py --device cuda:0 --models-dir settings   # real weights from
        FUNASR_REALTIME_MODEL / FUNASR_OFFLINE_MODEL / VAD_MODEL / PUNC_MODEL / MODELSCOPE_PATH

1. saturated: --sessions sessions push audio as fast as feed() takes it; engine compute per
   chunk (--chunk-ms, FUNASR_CHUNK_MS) = wall time / chunks (p50/p99 are of the time one feed
   of a chunk takes).
0. model step: the streaming model alone, per-session calls vs one batched call.
2. paced: N sessions send 100 ms chunks in real time; a run is sustained when the p99 lag
   (how late a chunk's feed() returns after the chunk was due) stays under 0.6 s. N doubles,
   then bisects, up to --max-sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bus.schemas import AsrEvent, AsrParams  # noqa: E402
from engines.asr.base import SAMPLE_RATE  # noqa: E402
from engines.asr.funasr import FunAsrBackend  # noqa: E402
from funspeech.settings import Settings  # noqa: E402

PACE = 1600  # 100 ms
LAG_LIMIT_S = 0.6


def test_audio(seconds: float) -> np.ndarray:
    """Speech clips from tests/data separated by 1 s pauses (synthetic tones if absent)."""
    clips = []
    try:
        import soundfile as sf

        for f in sorted((ROOT / "tests" / "data").glob("*.wav")):
            a, sr = sf.read(f, dtype="float32")
            if sr == SAMPLE_RATE and a.ndim == 1:
                clips.append(a)
    except ImportError:
        pass
    if not clips:
        t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
        clips = [(0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)]
    parts, n, i = [], 0, 0
    while n < seconds * SAMPLE_RATE:
        parts += [clips[i % len(clips)], np.zeros(SAMPLE_RATE, np.float32)]
        n += len(parts[-2]) + SAMPLE_RATE
        i += 1
    return np.concatenate(parts)[: int(seconds * SAMPLE_RATE)]


def make_settings(args: argparse.Namespace, batching: bool) -> Settings:
    extra: dict[str, object] = {
        "funasr_stream_batching": batching,
        "asr_model_mode": "all",
        "funasr_chunk_ms": args.chunk_ms,
    }
    if args.ncpu:
        extra["funasr_ncpu"] = args.ncpu
    if args.models_dir == "settings":
        return Settings(**extra)
    d = Path(args.models_dir)
    return Settings(
        funasr_realtime_model=str(d / "streaming"),
        funasr_offline_model=str(d / "offline"),
        vad_model=str(d / "vad"),
        punc_model=str(d / "punc"),
        **extra,
    )


async def run_session(backend: FunAsrBackend, audio: np.ndarray, step: int, paced: bool) -> dict:
    events: list[AsrEvent] = []
    stream = backend.open_stream(AsrParams(), events.append)
    lat, lag = [], []
    t0 = time.perf_counter()
    for i in range(0, len(audio), step):
        due = t0 + (i + step) / SAMPLE_RATE
        if paced:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        t = time.perf_counter()
        await stream.feed(audio[i : i + step])
        done = time.perf_counter()
        if (i + step) % backend.chunk_samples == 0:  # this feed completed a model chunk
            lat.append(done - t)
        lag.append(max(0.0, done - due))
    await stream.finish()
    return {"lat": lat, "lag": lag, "ends": sum(e.type == "end" for e in events)}


async def saturated(backend: FunAsrBackend, sessions: int, seconds: float) -> dict:
    audio = test_audio(seconds)
    t, c0 = time.perf_counter(), time.process_time()
    chunk = backend.chunk_samples
    runs = [run_session(backend, audio, chunk, False) for _ in range(sessions)]
    res = await asyncio.gather(*runs)
    wall, cpu = time.perf_counter() - t, time.process_time() - c0
    lat = np.array([x for r in res for x in r["lat"]]) * 1000
    chunks = sessions * (len(audio) // chunk)
    return {
        "per_chunk_ms": wall * 1000 / chunks,
        "cpu_per_chunk_ms": cpu * 1000 / chunks,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "rtf": wall / (sessions * seconds),
    }


async def paced_ok(backend: FunAsrBackend, n: int, seconds: float) -> tuple[bool, float]:
    audio = test_audio(seconds)
    res = await asyncio.gather(*(run_session(backend, audio, PACE, True) for _ in range(n)))
    lag = float(np.percentile([x for r in res for x in r["lag"]], 99))
    return lag < LAG_LIMIT_S, lag


async def max_paced(backend: FunAsrBackend, limit: int, seconds: float) -> tuple[int, float]:
    """Most paced sessions with p99 lag < LAG_LIMIT_S: double, then bisect."""
    good, bad, lag_at_good, n = 0, 0, 0.0, 4
    while True:
        ok, lag = await paced_ok(backend, n, seconds)
        print(f"    paced {n:4d} sessions: p99 lag {lag * 1000:7.1f} ms {'ok' if ok else 'LATE'}")
        if ok:
            good, lag_at_good = n, lag
        else:
            bad = n
        if bad == 0:
            if n >= limit:
                break
            n = min(n * 2, limit)
        else:
            if bad - good <= max(1, good // 8):
                break
            n = (good + bad) // 2
    return good, lag_at_good


def model_step(backend: FunAsrBackend, sessions: int, steps: int) -> dict[str, dict]:
    """Streaming-model compute per chunk in steady state: per-session inference calls vs
    one batched step over all sessions (same caches, same audio)."""
    assert backend.streaming is not None and backend._batcher is not None
    model, batcher = backend.streaming, backend._batcher
    size, cfg = backend.chunk_samples, backend.stream_cfg
    audio = test_audio(size * (steps + 2) / SAMPLE_RATE)
    out = {}
    for label in ("unbatched", "batched"):
        caches: list[dict] = [{} for _ in range(sessions)]
        for c in caches:  # first chunk: initialises the caches
            model.infer([audio[:size]], cache=c, **cfg)
        wall, cpu = [], []
        for k in range(1, steps + 1):
            chunk = audio[k * size : (k + 1) * size]
            t, c0 = time.perf_counter(), time.process_time()
            if label == "batched":
                batcher.step([(c, chunk) for c in caches])
            else:
                for c in caches:
                    model.infer([chunk], cache=c, **cfg)
            wall.append((time.perf_counter() - t) * 1000 / sessions)
            cpu.append((time.process_time() - c0) * 1000 / sessions)
        p50, p99 = np.percentile(wall, [50, 99])
        out[label] = {"p50": float(p50), "p99": float(p99), "cpu": float(np.median(cpu))}
    return out


async def bench(args: argparse.Namespace) -> None:
    rows = []
    step_rows = []
    for batching in (False, True):
        backend = FunAsrBackend(make_settings(args, batching), args.device, ThreadPoolExecutor(8))
        backend.load()
        label = "batched" if batching else "unbatched"
        if batching:
            for n in sorted({1, 4, args.sessions}):
                step_rows.append((n, model_step(backend, n, 20)))
        print(f"{label}:")
        await saturated(backend, 2, 3.0)  # warm-up
        sched = backend._scheds.get("stream")
        before = (sched.batches, sched.items) if sched else (0, 0)
        sat = await saturated(backend, args.sessions, args.seconds)
        after = (sched.batches, sched.items) if sched else (1, 1)
        mean_batch = (after[1] - before[1]) / max(1, after[0] - before[0])
        print(f"    saturated {args.sessions} sessions: {sat['per_chunk_ms']:.2f} ms per chunk")
        paced, lag = await max_paced(backend, args.max_sessions, args.paced_seconds)
        rows.append((label, sat, paced, lag, mean_batch))
        backend.close()
    cpu = os.cpu_count()
    print(f"\nFunASR engine, device {args.device}, {cpu} CPUs, models {args.models_dir}")
    print(f"streaming model step per {args.chunk_ms} ms chunk: wall ms p50 / p99, CPU ms p50")
    print(f"{'sessions':>8} {'unbatched':>24} {'batched':>24} {'CPU speed-up':>12}")
    for n, r in step_rows:
        u, b = r["unbatched"], r["batched"]
        print(
            f"{n:8d} {u['p50']:7.2f} / {u['p99']:6.2f} {u['cpu']:7.2f} "
            f"{b['p50']:7.2f} / {b['p99']:6.2f} {b['cpu']:7.2f} {u['cpu'] / b['cpu']:12.2f}"
        )
    print("engine (VAD + streaming + 2-pass finals + punctuation):")
    print(
        f"{'mode':10} {'wall/chunk ms':>13} {'CPU/chunk ms':>12} {'feed p50 ms':>11} "
        f"{'feed p99 ms':>11} {'RTF':>6} {'mean batch':>10} {'paced sessions':>14} "
        f"{'p99 lag ms':>10}"
    )
    for label, sat, paced, lag, mb in rows:
        print(
            f"{label:10} {sat['per_chunk_ms']:13.2f} {sat['cpu_per_chunk_ms']:12.2f} "
            f"{sat['p50']:11.1f} {sat['p99']:11.1f} {sat['rtf']:6.3f} {mb:10.1f} "
            f"{paced:14d} {lag * 1000:10.1f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backend", default="funasr", choices=["funasr"])
    p.add_argument("--device", default="cpu", help="cpu | cuda:0 ...")
    p.add_argument(
        "--models-dir",
        default="",
        help="dir with streaming/ offline/ vad/ punc/ subdirs (built there if missing); "
        "'settings' = real models from the environment; default: tiny models in a temp dir",
    )
    p.add_argument("--sessions", type=int, default=16, help="sessions in the saturated run")
    p.add_argument("--seconds", type=float, default=12.0, help="audio per saturated session")
    p.add_argument("--paced-seconds", type=float, default=8.0, help="audio per paced session")
    p.add_argument("--max-sessions", type=int, default=256, help="paced search upper bound")
    p.add_argument("--ncpu", type=int, default=0, help="torch CPU threads (FUNASR_NCPU)")
    p.add_argument(
        "--chunk-ms", type=int, default=600, choices=[240, 480, 600], help="FUNASR_CHUNK_MS"
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.models_dir != "settings":
            root = Path(args.models_dir or tmp)
            if not all((root / r / "model.pt").is_file() for r in ("streaming", "vad")):
                from tests.funasr_tiny import build_tiny_models

                build_tiny_models(root)
            args.models_dir = str(root)
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
