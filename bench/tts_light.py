"""Light TTS in-process figures: RTF, first-audio latency and the Whisper round trip per voice.

    python -m bench.tts_light [--voices 中文女,英文男] [--data-dir data]

RTF is given twice: wall time / audio time (what a client sees on this machine now, including
other load) and CPU time of the process / audio time (independent of other load; divide by the
cores to get the best-case wall RTF). First audio = time to the first piece of a sentence.
Round trip: light ASR (Whisper base) on the synthesized audio, CER for Mandarin (OpenCC t2s),
WER for English.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import soxr

from engines.tts.base import SynthesisOptions
from engines.tts.light import LightTtsBackend
from engines.tts.light.voices import BY_ID
from funspeech.settings import Settings
from tests.textmetrics import cer, wer

SENTENCES = {
    "zh": [
        "今天天气很好，我们去公园散步吧。",
        "我喜欢在周末看电影和听音乐。",
        "请把明天下午的会议改到三点钟。",
        "这家餐厅的菜很好吃，价格也不贵。",
    ],
    "en": [
        "The quick brown fox jumps over the lazy dog near the bank of the river.",
        "Please move the team meeting to tomorrow afternoon in the main office.",
        "Good morning everyone and welcome to the weekly meeting.",
        "I would like to book a table for two people tonight.",
    ],
    "ja": ["今日はいい天気ですね。", "明日の会議は午後三時からです。"],
}
DEFAULT_RUNS = [
    ("中文女", "zh"), ("中文男", "zh"), ("粤语女", "zh"), ("韩语女", "zh"),
    ("英文男", "en"), ("英文女", "en"), ("中文男", "en"), ("jf_tebukuro", "en"), ("日语男", "ja"),
]  # fmt: skip


async def measure(backend: LightTtsBackend, asr: object, voice: str, lang: str) -> dict:
    from bus.schemas import AsrParams

    firsts, errors = [], []
    wall = cpu = audio_s = 0.0
    for text in SENTENCES[lang]:
        t0, c0 = time.perf_counter(), time.process_time()
        pieces = []
        async for piece in backend.synthesize(text, voice, SynthesisOptions()):
            if not pieces:
                firsts.append(time.perf_counter() - t0)
            pieces.append(piece.audio)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        audio = np.concatenate(pieces)
        audio_s += len(audio) / backend.sample_rate
        if lang == "ja":
            continue
        pcm = np.asarray(soxr.resample(audio, backend.sample_rate, 16000), np.float32)
        segments = await asr.transcribe(pcm, AsrParams(language=lang))  # type: ignore[attr-defined]
        if lang == "zh":
            import opencc

            hyp = opencc.OpenCC("t2s").convert("".join(s.text for s in segments))
            errors.append(cer(text, hyp))
        else:
            errors.append(wer(text, " ".join(s.text for s in segments)))
    return {
        "voice": voice, "speaker": BY_ID[voice].speaker, "lang": lang,
        "rtf_wall": wall / audio_s, "rtf_cpu": cpu / audio_s,
        "first_p50": statistics.median(firsts), "first_max": max(firsts),
        "error": statistics.mean(errors) if errors else float("nan"),
    }  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from engines.asr.light import LightAsrBackend

    settings = Settings(data_dir=args.data_dir, asr_light_models="whisper-base", _env_file=None)
    executor = ThreadPoolExecutor(4)
    backend = LightTtsBackend(settings, "cpu", executor)
    backend.load()
    asr = LightAsrBackend(settings.light_asr(), "cpu", executor)
    asr.load()
    load = os.getloadavg()[0]
    print(f"slots {backend.slots} x threads {backend.threads}, capacity {backend.capacity}, "
          f"warm-up Kokoro CPU-RTF {backend._rtf:.2f}, load avg {load:.1f}")  # fmt: skip
    print("voice          speaker        lang  RTF wall  RTF cpu  first p50  first max  error")
    for voice, lang in DEFAULT_RUNS:
        r = await measure(backend, asr, voice, lang)
        print(f"{r['voice']:<14} {r['speaker']:<14} {r['lang']:<5} {r['rtf_wall']:8.2f} "
              f"{r['rtf_cpu']:8.2f} {r['first_p50']:9.2f}s {r['first_max']:9.2f}s "
              f"{r['error']:6.1%}")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
