"""Run one ASR engine process: python -m engines --device cpu"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

from engines.asr import create_asr_backend
from engines.asr.base import ModelNotFound
from engines.server import AsrEngine
from funspeech.logs import settle_heap, setup_logging
from funspeech.settings import Settings

log = logging.getLogger("funspeech.engine")


async def serve(settings: Settings, device: str) -> int:
    executor = ThreadPoolExecutor(settings.inference_thread_pool_size, thread_name_prefix="infer")
    backend = create_asr_backend(settings, device, executor)
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(executor, backend.load)
    except ModelNotFound as exc:
        log.error("cannot start the %s engine on %s: %s", settings.asr_backend, device, exc)
        return 2
    except RuntimeError as exc:  # a model that is there but cannot be loaded (corrupt weights)
        log.error("cannot start the %s engine on %s: %s", settings.asr_backend, device, exc)
        log.debug("model load failure", exc_info=True)
        return 3
    settle_heap()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    engine = AsrEngine(
        backend,
        nats_url=settings.nats_url,
        device=device,
        capacity=settings.asr_max_sessions,
        drain_timeout=settings.engine_drain_timeout,
    )
    await engine.run(stop)
    executor.shutdown(wait=False, cancel_futures=True)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description="FunSpeech ASR engine (one per device)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N")
    args = parser.parse_args()
    settings = Settings()
    setup_logging(settings, f"engine-{args.device.replace(':', '')}")
    sys.exit(asyncio.run(serve(settings, args.device)))


if __name__ == "__main__":
    main()
