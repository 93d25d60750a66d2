"""`funspeech`: the whole service on one machine, supervised.

A nats-server with JetStream (when NATS_URL names this machine and nothing answers there), one
engine process per device in ASR_GPUS and WORKERS bridge processes on PORT. A child that dies is
restarted (nats-server with the same store); a child that keeps failing ends the launcher with
its last lines. SIGINT/SIGTERM at any time stops bridges (they drain), then engines (they
drain), then nats-server; a second signal kills what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from bus.client import Bus
from bus.connect import servers, shown
from bus.schemas import EngineInfo
from funspeech.logs import setup_logging
from funspeech.preflight import (
    StartupError,
    check_backend,
    check_port_free,
    local_address,
    writable_dir,
)
from funspeech.procs import NATS_READY, nats_server_command
from funspeech.settings import Settings
from funspeech.supervisor import Child, Policy, Supervisor

log = logging.getLogger("funspeech")

NATS_STOP_S = 10.0
NATS_MAX_PAYLOAD = "4MB"  # as nats.conf: a 60 s 16 kHz clip fits one recognize request
STOP_MARGIN_S = 10.0  # on top of a drain timeout before a child is killed
BRIDGE_DRAIN_DEFAULT_S = 30.0  # when Settings has no bridge_drain_timeout (BRIDGE_DRAIN_TIMEOUT)
READY_POLL_S = 0.1


async def nats_answers(host: str, port: int) -> bool | None:
    """True: a NATS server answers at host:port; None: nothing listens; False: something else."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return None
    try:
        first = await asyncio.wait_for(reader.readline(), 2.0)
    except (OSError, TimeoutError):
        first = b""
    finally:
        writer.close()
    return first.startswith(b"INFO ")


def bridge_drain_timeout(settings: Settings) -> float:
    return float(getattr(settings, "bridge_drain_timeout", BRIDGE_DRAIN_DEFAULT_S))


class Launcher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sup = Supervisor(
            Policy(
                restart_limit=settings.launcher_restart_limit,
                backoff=settings.launcher_restart_backoff,
                backoff_max=settings.launcher_restart_backoff_max,
                stable_s=settings.launcher_stable_s,
            )
        )
        self.nats: Child | None = None
        self.engines: list[Child] = []
        self.bridges: list[Child] = []
        self.bus: Bus | None = None
        # set by SIGINT/SIGTERM; checked after every start-up step (library code such as
        # nats-py's connect swallows a task cancellation)
        self.stop_requested = asyncio.Event()

    async def plan_nats(self) -> tuple[str, int] | None:
        """Checks before anything starts; (address, port) when we must start nats-server.
        A NATS_URL with several servers names a cluster: one must answer, none is started."""
        urls = [urlparse(u) for u in servers(self.settings.nats_url)]
        if len(urls) > 1:
            for url in urls:
                if await nats_answers(url.hostname or "127.0.0.1", url.port or 4222):
                    return None
            raise StartupError(f"NATS_URL={shown(self.settings.nats_url)}: no server answers")
        host, port = urls[0].hostname or "127.0.0.1", urls[0].port or 4222
        answer = await nats_answers(host, port)
        if answer:
            return None
        if answer is False:
            raise StartupError(
                f"NATS_URL={self.settings.nats_url}: something that is not a NATS server "
                f"listens on {host}:{port}"
            )
        address = await asyncio.to_thread(local_address, host)
        if address is None:
            raise StartupError(
                f"NATS_URL={self.settings.nats_url}: nothing answers on {host}:{port}, and "
                f"{host} is not this machine, so no nats-server is started for it"
            )
        check_port_free("NATS_URL", address, port)
        return address, port

    async def run(self) -> int:
        s = self.settings
        check_backend(s)
        start_nats = await self.plan_nats()
        check_port_free("PORT", s.host, s.port)
        if start_nats:
            store = writable_dir("NATS_STORE_DIR", s.nats_store_dir, Path(s.nats_store_dir))
            address, port = start_nats
            self.nats = await self.sup.start(
                Child(
                    "nats-server",
                    nats_server_command(address, port, store, NATS_MAX_PAYLOAD),
                    NATS_READY,
                )
            )
            if not await self.wait_ready([self.nats], 30.0, "nats-server"):
                return self.ended()
            log.info("nats-server with JetStream on %s:%d (store %s)", address, port, store)
        else:
            log.info("using NATS at %s", s.nats_url)
        py = sys.executable
        for task, devices in (("asr", s.asr_devices()), ("tts", s.tts_devices())):
            for device in devices:
                argv = [py, "-m", "engines", "--task", task, "--device", device]
                name = f"engine {device}" if task == "asr" else f"{task} engine {device}"
                env = {"CUDA_VISIBLE_DEVICES": device.removeprefix("cuda:").replace("cpu", "")}
                self.engines.append(await self.sup.start(Child(name, argv, env=env)))
        for n in range(1, s.workers + 1):
            argv = [py, "-m", "bridge", "--worker", str(n)]
            self.bridges.append(await self.sup.start(Child(f"bridge {n}", argv)))
        self.bus = await Bus.connect(s.nats_url, "funspeech-launcher", s.funspeech_namespace)
        if self.stop_requested.is_set():
            return self.ended()
        watch = asyncio.create_task(self.watch_engines())
        try:
            if not await self.wait_ready(self.engines, s.launcher_start_timeout, "engines"):
                return self.ended()
            if not await self.wait_bridge_port():
                return self.ended()
            self.print_summary()
            await self.wait_any(self.sup.failed, self.stop_requested)
            return self.ended()
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

    def ended(self) -> int:
        """Exit code once start-up or service ends: 0 when asked to stop, 1 on a crash loop."""
        return 0 if self.stop_requested.is_set() else 1

    @staticmethod
    async def wait_any(*events: asyncio.Event) -> None:
        waits = [asyncio.create_task(e.wait()) for e in events]
        try:
            await asyncio.wait(waits, return_when="FIRST_COMPLETED")
        finally:
            for task in waits:
                task.cancel()

    async def wait_ready(self, children: list[Child], timeout: float, what: str) -> bool:
        """True once every child is ready; False on a crash loop or a stop request."""
        done = asyncio.Event()

        async def all_ready() -> None:
            for child in children:
                await child.ready.wait()
            done.set()

        task = asyncio.create_task(all_ready())
        try:
            async with asyncio.timeout(timeout):
                await self.wait_any(done, self.sup.failed, self.stop_requested)
        except TimeoutError:
            raise StartupError(f"{what} did not come up within {timeout:.0f} s") from None
        finally:
            task.cancel()
        return done.is_set() and not self.sup.failed.is_set() and not self.stop_requested.is_set()

    async def wait_bridge_port(self, timeout: float = 30.0) -> bool:
        host = "127.0.0.1" if self.settings.host in ("", "0.0.0.0", "::") else self.settings.host
        try:
            async with asyncio.timeout(timeout):
                while not (self.sup.failed.is_set() or self.stop_requested.is_set()):
                    with contextlib.suppress(OSError):
                        _, writer = await asyncio.open_connection(host, self.settings.port)
                        writer.close()
                        return True
                    await asyncio.sleep(READY_POLL_S)
        except TimeoutError:
            raise StartupError(f"no bridge listens on PORT {self.settings.port}") from None
        return False

    async def run_checked(self) -> int:
        """run(), with a start-up failure as one log line (a SystemExit must not leave a task)."""
        try:
            return await self.run()
        except StartupError as exc:
            log.error("%s", exc)
            return 1

    def own_engines(self) -> list[EngineInfo]:
        """Engines on the bus that we started: this host and one of our engine pids."""
        assert self.bus is not None
        host, pids = socket.gethostname(), {c.pid for c in self.engines}
        return [e for e in self.bus.directory.engines() if e.host == host and e.pid in pids]

    async def watch_engines(self) -> None:
        assert self.bus is not None
        while True:
            live = {e.pid for e in self.own_engines()}
            for child in self.engines:
                if child.pid in live:
                    self.sup.mark_ready(child)
            await self.bus.directory.wait_change(1.0)

    def print_summary(self) -> None:
        s = self.settings
        shown = "127.0.0.1" if s.host in ("0.0.0.0", "") else s.host
        lines = [f"FunSpeech is up: http://{shown}:{s.port}  (NATS {s.nats_url})"]
        for e in self.own_engines():
            if e.task == "asr":
                what = ", ".join(m.id + (" (default)" if m.default else "") for m in e.models)
            else:
                what = f"{len(e.voices)} voices" + (", cloning" if "clone" in e.features else "")
            lines.append(
                f"  {e.task} engine {e.id}: {e.backend} on {e.device}, capacity {e.capacity}: "
                f"{what}"
            )
        lines.append(f"  NLS WebSocket: ws://{shown}:{s.port}/ws/v1   Ctrl-C stops everything")
        print("\n".join(lines), flush=True)

    async def stop(self) -> None:
        s = self.settings
        groups = [
            (self.bridges, bridge_drain_timeout(s) + STOP_MARGIN_S),
            (self.engines, s.engine_drain_timeout + STOP_MARGIN_S),
            ([self.nats] if self.nats else [], NATS_STOP_S),
        ]
        await self.sup.stop(groups[:2])
        if self.bus is not None:  # before its server goes
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.bus.close(), 5.0)
        await self.sup.stop(groups[2:])


async def run(settings: Settings) -> int:
    launcher = Launcher(settings)
    loop = asyncio.get_running_loop()
    main = asyncio.create_task(launcher.run_checked())
    signals: list[int] = []

    def on_signal(signum: int) -> None:
        signals.append(signum)
        if len(signals) == 1:
            log.info("%s: stopping", signal.Signals(signum).name)
            launcher.stop_requested.set()
            main.cancel()
        else:
            log.warning("second signal: killing what is left")
            launcher.sup.kill_all()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    code = 1
    try:
        code = await main
    except asyncio.CancelledError:
        code = 0 if signals else 1
    finally:
        if launcher.sup.children:
            await launcher.stop()
            log.info("stopped")
    return code


def main() -> None:
    settings = Settings()
    setup_logging(settings, "main")
    # our bus connection rides out nats-server restarts; the supervisor says why it went
    logging.getLogger("nats.aio.client").setLevel(logging.CRITICAL)
    sys.exit(asyncio.run(run(settings)))


if __name__ == "__main__":
    main()
