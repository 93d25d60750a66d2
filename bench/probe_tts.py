"""A TTS engine process on a probe backend, for bench/cluster_scale.py (async jobs per minute):

    python -m bench.probe_tts --nats-url URL [--capacity 2] [--sentence-ms 500] [--replicas 3]

It is the real TtsEngine (engines/tts_engine.py) with its async job worker, voice store and
queue-group endpoints; only the model is replaced: each sentence "takes" --sentence-ms of
waiting (as a GPU would, without using this machine's CPU) and yields 100 ms of silence per
10 characters. So job throughput measures the pipeline (JetStream work queue, object store,
replication, the engines' scheduling), not a model. Not a product backend: no setting selects it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from concurrent.futures import Executor, ThreadPoolExecutor

import numpy as np

from bus.schemas import VoiceDesc
from engines.tts.base import AudioPiece, PromptVoice, SynthesisOptions, TtsBackend
from engines.tts_engine import TtsEngine

RATE = 16000


class ProbeTtsBackend(TtsBackend):
    name = "probe"

    def __init__(self, capacity: int, sentence_s: float, executor: Executor) -> None:
        super().__init__(executor)
        self._capacity = capacity
        self.sentence_s = sentence_s

    @property
    def sample_rate(self) -> int:
        return RATE

    @property
    def voices(self) -> list[VoiceDesc]:
        return [VoiceDesc(id="probe", name="Probe", aliases=["xiaoyun"])]

    @property
    def capacity(self) -> int:
        return self._capacity

    def load(self) -> None:
        pass

    async def synthesize(
        self, text: str, voice: str | PromptVoice, options: SynthesisOptions
    ) -> AsyncIterator[AudioPiece]:
        await asyncio.sleep(self.sentence_s)
        yield AudioPiece(np.zeros(RATE // 10 * max(1, len(text) // 10), dtype=np.float32))


async def serve(args: argparse.Namespace) -> None:
    executor = ThreadPoolExecutor(1, thread_name_prefix="probe")
    backend = ProbeTtsBackend(args.capacity, args.sentence_ms / 1000, executor)
    engine = TtsEngine(
        backend,
        nats_url=args.nats_url,
        device="cpu",
        capacity=args.capacity,
        voice_replicas=args.replicas,
        drain_timeout=2.0,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await engine.run(stop)


def main() -> None:
    parser = argparse.ArgumentParser(description="TtsEngine on a probe backend (benchmark)")
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--capacity", type=int, default=2)
    parser.add_argument("--sentence-ms", type=float, default=500.0)
    parser.add_argument("--replicas", type=int, default=1, help="JETSTREAM_REPLICAS")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
