"""Logging: stdout plus a rotating file per process (LOG_FILE, LOG_MAX_BYTES, LOG_BACKUP_COUNT)."""

from __future__ import annotations

import gc
import logging
import logging.handlers
from pathlib import Path

from funspeech.settings import Settings

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


def settle_heap() -> None:
    """After start-up: move what is loaded out of the collector's way and collect less often.
    A full collection over a big heap paused the bridge ~100 ms at 500 sessions (the p99 of
    docs/benchmarks.md); steady state makes no cyclic garbage, only short-lived objects."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 50)


def setup_logging(settings: Settings, component: str) -> None:
    """component names the process ("main", "bridge-1", "engine-cpu") in its log file name."""
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(settings.log_level.upper())
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(console)
    if settings.log_file:
        path = Path(settings.log_file)
        if component != "main":
            path = path.with_name(f"{path.stem}.{component}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            path,
            maxBytes=settings.log_max_bytes,
            backupCount=settings.log_backup_count,
            encoding="utf-8",
        )
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    for noisy in ("numba", "urllib3", "asyncio", "aiohttp.access", "faster_whisper", "modelscope"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
