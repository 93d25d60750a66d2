"""Logging: stdout plus a rotating file per process (LOG_FILE, LOG_MAX_BYTES, LOG_BACKUP_COUNT),
as text for a terminal or as one JSON object per line (LOG_FORMAT=json, python-json-logger).
Every record carries the ids of the session it is about (bus/context.py: task_id, session_id,
engine_id) and the process's fixed fields (component, and an engine's engine_id): JSON shows
them as fields, so one session can be followed from the bridge to its engine by task_id."""

from __future__ import annotations

import gc
import logging
import logging.handlers
import re
import socket
from pathlib import Path

from pythonjsonlogger.json import JsonFormatter

from bus import context
from funspeech.preflight import StartupError, check_process
from funspeech.settings import Settings

SECRETS = ("apptoken", "appkey")  # never logged (and NATS_URL without its credentials)
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
JSON_FIELDS = ["asctime", "levelname", "name", "process", "message"]
JSON_NAMES = {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"}
FIXED: dict[str, str] = {}  # this process's fields on every record (set_fields)


def set_fields(**fields: str) -> None:
    """Fields every record of this process carries from now on (an engine's engine_id)."""
    FIXED.update(fields)


class ContextFilter(logging.Filter):
    """Adds the session ids of the current context and the process's fixed fields to a record
    (only those that are set)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in (FIXED | context.current()).items():
            setattr(record, name, value)
        return True


def formatter(settings: Settings, component: str) -> logging.Formatter:
    if settings.log_format == "json":
        return JsonFormatter(
            JSON_FIELDS,
            rename_fields=JSON_NAMES,
            static_fields={"component": component},
            json_ensure_ascii=False,
        )
    return logging.Formatter(FORMAT)


def settle_heap() -> None:
    """After start-up: move what is loaded out of the collector's way and collect less often.
    A full collection over a big heap paused the bridge ~100 ms at 500 sessions (the p99 of
    docs/benchmarks.md); steady state makes no cyclic garbage, only short-lived objects."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 50)


def log_path(settings: Settings, component: str) -> Path | None:
    """This process's log file: LOG_FILE for the launcher, <stem>.<component>[.<instance>] for
    the others (LOG_INSTANCE; "hostname" = this host's name, unique per container)."""
    if not settings.log_file:
        return None
    path = Path(settings.log_file)
    if component == "main":
        return path
    instance = settings.log_instance
    if instance == "hostname":
        instance = socket.gethostname()
    name = ".".join(p for p in (path.stem, component, instance) if p)
    return path.with_name(f"{name}{path.suffix}")


def setup_logging(settings: Settings, component: str) -> None:
    """component names the process ("main", "bridge-1", "engine-cpu") in its log file name.
    Runs the process's start-up checks first (funspeech.preflight): an unwritable log or data
    directory ends the process with one line naming the setting."""
    check_process(settings, component)
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(settings.log_level.upper())
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    path = log_path(settings, component)
    if path is not None:
        try:
            handler = logging.handlers.RotatingFileHandler(
                path,
                maxBytes=settings.log_max_bytes,
                backupCount=settings.log_backup_count,
                encoding="utf-8",
            )
        except OSError as exc:
            msg = f"LOG_FILE={settings.log_file!r}: cannot write {path} ({exc.strerror})"
            raise StartupError(msg) from None
        handlers.append(handler)
    fields = ContextFilter()
    for handler in handlers:
        handler.setFormatter(formatter(settings, component))
        handler.addFilter(fields)
        root.addHandler(handler)
    logging.captureWarnings(True)  # Python warnings as log records (JSON lines too)
    for noisy in ("numba", "urllib3", "asyncio", "aiohttp.access", "faster_whisper", "modelscope"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    shown = settings.model_dump()
    shown.update({k: "***" for k in SECRETS if shown[k]})
    shown["nats_url"] = re.sub(r"//[^@/]*@", "//***@", settings.nats_url)
    logging.getLogger("funspeech").debug("%s settings: %s", component, shown)
