"""Shared fixtures: a real nats-server with JetStream on an ephemeral port, real engine
processes, a real bridge on an ephemeral port (all from tests/harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import (
    DATA,
    ROOT,
    BridgeProcess,
    EngineProcess,
    free_port,
    running_nats,
    wait_engines,
    wait_port,
)

# names tests import from here
__all__ = [
    "DATA",
    "ROOT",
    "BridgeProcess",
    "EngineProcess",
    "free_port",
    "running_nats",
    "wait_engines",
    "wait_port",
]


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_nats(tmp_path_factory.mktemp("jetstream")) as url:
        yield url


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[str]:
    """A nats-server of this test's own, so its engines are the only ones on that bus."""
    with running_nats(tmp_path / "jetstream") as url:
        yield url


@pytest.fixture(scope="session")
def light_engine(
    nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    """One real engine on the light default backend (Whisper base), shared by the session."""
    engine = EngineProcess(nats_url, tmp_path_factory.mktemp("logs"), ASR_BACKEND="light").start()
    try:
        wait_engines(nats_url, 1, procs=[engine], task="asr")
    except (TimeoutError, RuntimeError) as exc:
        engine.stop()
        raise RuntimeError(f"engine did not come up ({exc}):\n{engine.log()}") from None
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def tts_engine(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    """One real TTS engine on the light default backend (Kokoro + Piper), shared by the
    session; room for 4 syntheses at once."""
    engine = EngineProcess(
        nats_url, tmp_path_factory.mktemp("logs"), task="tts", TTS_MAX_SESSIONS="4"
    ).start()
    try:
        wait_engines(nats_url, 1, timeout=180, procs=[engine], task="tts")
    except (TimeoutError, RuntimeError) as exc:
        engine.stop()
        raise RuntimeError(f"TTS engine did not come up ({exc}):\n{engine.log()}") from None
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def bridge(
    nats_url: str, light_engine: EngineProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BridgeProcess]:
    """The bridge with auth off, in front of the light engine (ready with ASR engines alone)."""
    proc = BridgeProcess(nats_url, tmp_path_factory.mktemp("logs"), HEALTH_TASKS="asr").start()
    yield proc
    proc.stop()
