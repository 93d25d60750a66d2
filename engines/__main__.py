"""Run one engine process: python -m engines --task asr|tts --device cpu|cuda:N"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

from engines.asr.base import ModelNotFound
from engines.server import Engine
from funspeech.logs import set_fields, settle_heap, setup_logging
from funspeech.settings import Settings

log = logging.getLogger("funspeech.engine")


def build(settings: Settings, task: str, device: str, executor: ThreadPoolExecutor) -> Engine:
    """The task's backend (not loaded yet) inside its engine; heavy imports for that one only."""
    common = {
        "nats_url": settings.nats_url,
        "namespace": settings.funspeech_namespace,
        "device": device,
        "drain_timeout": settings.engine_drain_timeout,
    }
    if task == "tts":
        from engines.tts import create_tts_backend
        from engines.tts_engine import TtsEngine

        return TtsEngine(
            create_tts_backend(settings, device, executor),
            capacity=settings.tts_max_sessions,
            mode=getattr(settings, "tts_model_mode", ""),
            voice_replicas=settings.jetstream_replicas,
            jobs_retention=settings.tts_async_retention,
            part_chars=settings.tts_async_part_chars,
            **common,
        )
    from engines.asr import create_asr_backend
    from engines.asr_engine import AsrEngine

    return AsrEngine(
        create_asr_backend(settings, device, executor),
        capacity=settings.asr_max_sessions,
        mode=settings.asr_model_mode,
        **common,
    )


def runtime_device(device: str) -> str:
    """The device as this process sees it: the launcher runs the engine for cuda:N with
    CUDA_VISIBLE_DEVICES=N (libraries that always open GPU 0 then open the right one), so
    inside, it is cuda:0; the engine still reports cuda:N."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if device.startswith("cuda:") and visible == device.removeprefix("cuda:"):
        return "cuda:0"
    return device


def pool_size(settings: Settings, task: str) -> int:
    """INFERENCE_THREAD_POOL_SIZE, raised for TTS so that every synthesis TTS_MAX_SESSIONS
    admits has a thread (a streaming CosyVoice synthesis holds one while it runs; without one
    it would wait unseen inside an engine that said it had room), plus two for prompts."""
    size = settings.inference_thread_pool_size
    return max(size, settings.tts_max_sessions + 2) if task == "tts" else size


async def serve(settings: Settings, task: str, device: str) -> int:
    executor = ThreadPoolExecutor(pool_size(settings, task), thread_name_prefix="infer")
    engine = build(settings, task, runtime_device(device), executor)
    engine.device = device
    set_fields(engine_id=engine.id)  # on every log line of this process
    backend = engine.backend  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    name = getattr(settings, f"{task}_backend")
    try:
        await loop.run_in_executor(executor, backend.load)
    except ModelNotFound as exc:
        log.error("cannot start the %s %s engine on %s: %s", name, task, device, exc)
        return 2
    except RuntimeError as exc:  # a model that is there but cannot be loaded (corrupt weights)
        log.error("cannot start the %s %s engine on %s: %s", name, task, device, exc)
        log.debug("model load failure", exc_info=True)
        return 3
    settle_heap()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await engine.run(stop)
    executor.shutdown(wait=False, cancel_futures=True)
    return 0


def pin_gpu(device: str) -> None:
    """An engine for cuda:N sees only GPU N (before any CUDA library loads), unless the
    environment already says which GPUs it sees."""
    if device.startswith("cuda:") and "CUDA_VISIBLE_DEVICES" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = device.removeprefix("cuda:")


def main() -> None:
    parser = argparse.ArgumentParser(description="FunSpeech engine (one per device and task)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N")
    parser.add_argument("--task", default="asr", choices=["asr", "tts"], help="what it serves")
    args = parser.parse_args()
    pin_gpu(args.device)
    settings = Settings()
    suffix = "" if args.task == "asr" else "-tts"
    setup_logging(settings, f"engine{suffix}-{args.device.replace(':', '')}")
    sys.exit(asyncio.run(serve(settings, args.task, args.device)))


if __name__ == "__main__":
    main()
