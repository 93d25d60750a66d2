"""CosyVoice adapter benchmark: first-audio latency and RTF at N concurrent streams, in-process.

    # tiny random-weight models built now (needs COSYVOICE_DIR and its deps), this CPU:
    python bench/cosyvoice_tts.py --cosyvoice-dir /opt/CosyVoice --tiny --streams 1
    # a GPU host with real weights (ids from the ModelScope cache or directories):
    python bench/cosyvoice_tts.py --cosyvoice-dir /opt/CosyVoice --device cuda:0 \
        --sft iic/CosyVoice-300M-SFT --clone FunAudioLLM/Fun-CosyVoice3-0.5B-2512 \
        --streams 1,4,16

Each of N streams synthesizes one sentence through CosyVoiceBackend.synthesize (streaming, as
the engine does) at the same moment, preset (--voice) or cloned (--clone-prompt, a WAV and its
text; a made-up tone without). Engine capacity is set to N, so all N run at once on the device.
Per stream: first audio = time to the first piece; RTF = wall time / audio seconds. Reported:
p50/p90/max of first audio, mean RTF, aggregate audio seconds per wall second. One warm-up
synthesis runs first (and processes the clone prompt) outside the timings.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engines.tts.base import PromptVoice, SynthesisOptions  # noqa: E402
from engines.tts.cosyvoice import CosyVoiceBackend  # noqa: E402
from funspeech.settings import Settings  # noqa: E402

TEXT = "收到好友从远方寄来的生日礼物，那份意外的惊喜与深深的祝福让我心中充满了甜蜜的快乐。"


def prompt_voice(args: argparse.Namespace) -> PromptVoice:
    if args.clone_prompt:
        import soundfile as sf

        audio, sr = sf.read(args.clone_prompt, dtype="float32", always_2d=True)
        return PromptVoice("bench", audio.mean(axis=1), sr, args.clone_prompt_text, None)
    sr = 16000
    t = np.arange(4 * sr) / sr
    tone = 0.2 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return PromptVoice("bench", tone.astype(np.float32), sr, "希望你以后能够做的比我还好", "zh")


async def one_stream(backend: CosyVoiceBackend, voice: str | PromptVoice, text: str) -> dict:
    t0 = time.perf_counter()
    first, samples = None, 0
    async for piece in backend.synthesize(text, voice, SynthesisOptions()):
        first = first if first is not None else time.perf_counter() - t0
        samples += len(piece.audio)
    wall = time.perf_counter() - t0
    audio_s = samples / backend.sample_rate
    return {"first_s": first or wall, "wall_s": wall, "audio_s": audio_s}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


async def bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    streams = [int(s) for s in args.streams.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        sft, clone = args.sft, args.clone
        if args.tiny:
            from tests.cosyvoice_tiny import build_all

            t = time.perf_counter()
            tiny = build_all(Path(tmp), args.cosyvoice_dir)
            print(f"built tiny models in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            sft, clone = str(tiny["v1"]), str(tiny["v3" if args.version == "cosyvoice3" else "v2"])
        settings = Settings(
            cosyvoice_dir=args.cosyvoice_dir,
            tts_model_mode=args.mode,
            clone_model_version=args.version,
            sft_model_id=sft,
            clone_model_id=clone,
            cosyvoice3_model_id=clone,
            tts_load_trt=args.trt,
            tts_enable_fp16=args.fp16,
        )
        executor = ThreadPoolExecutor(max(streams) + 4)
        backend = CosyVoiceBackend(settings, args.device, executor)
        backend.config = dataclasses.replace(backend.config, max_sessions=max(streams))
        t = time.perf_counter()
        await asyncio.to_thread(backend.load)
        print(f"loaded {backend.model_paths()} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        voice: str | PromptVoice = (
            prompt_voice(args) if args.mode == "clone" or args.clone_voice else args.voice
        )
        await one_stream(backend, voice, args.text)  # warm-up (and the clone prompt)
        rows = []
        for n in streams:
            t = time.perf_counter()
            runs = await asyncio.gather(*(one_stream(backend, voice, args.text) for _ in range(n)))
            wall = time.perf_counter() - t
            firsts = [r["first_s"] for r in runs]
            rows.append(
                {
                    "streams": n,
                    "first_audio_p50_s": round(statistics.median(firsts), 3),
                    "first_audio_p90_s": round(pct(firsts, 0.9), 3),
                    "first_audio_max_s": round(max(firsts), 3),
                    "rtf_mean": round(statistics.mean(r["wall_s"] / r["audio_s"] for r in runs), 3),
                    "audio_s_per_s": round(sum(r["audio_s"] for r in runs) / wall, 2),
                    "audio_s_mean": round(statistics.mean(r["audio_s"] for r in runs), 2),
                }
            )
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
        backend.close()
        executor.shutdown()
        return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cosyvoice-dir", default=os.environ.get("COSYVOICE_DIR", ""))
    p.add_argument("--device", default="cpu", help="cpu or cuda:N")
    p.add_argument("--tiny", action="store_true", help="build tiny random-weight models now")
    p.add_argument("--sft", default="iic/CosyVoice-300M-SFT", help="v1 SFT dir or id")
    p.add_argument("--clone", default="FunAudioLLM/Fun-CosyVoice3-0.5B-2512", help="v2/v3 dir/id")
    p.add_argument("--version", choices=["cosyvoice2", "cosyvoice3"], default="cosyvoice3")
    p.add_argument("--mode", choices=["all", "sft", "clone"], default="all")
    p.add_argument("--voice", default="中文女", help="preset voice (modes all/sft)")
    p.add_argument("--clone-voice", action="store_true", help="use a cloned voice in mode all")
    p.add_argument("--clone-prompt", default="", help="prompt WAV for the cloned voice")
    p.add_argument("--clone-prompt-text", default="", help="what the prompt WAV says")
    p.add_argument("--streams", default="1,4,16", help="comma list of concurrent streams")
    p.add_argument("--text", default=TEXT)
    p.add_argument("--trt", action="store_true", help="TTS_LOAD_TRT")
    p.add_argument("--fp16", action="store_true", help="TTS_ENABLE_FP16")
    asyncio.run(bench(p.parse_args()))


if __name__ == "__main__":
    main()
