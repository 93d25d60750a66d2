"""NATS_URL with several servers (bus/connect.py): the list, tried in order, a dead first
server skipped, credentials masked in messages; the launcher starts no nats-server for a
list."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.client import Bus
from bus.connect import servers, shown
from funspeech.__main__ import Launcher
from funspeech.preflight import StartupError
from funspeech.settings import Settings
from tests.harness import free_port


def test_servers_and_shown() -> None:
    url = " nats://u:p@10.0.0.2:4222 ,nats://10.0.0.1:4222,, nats://u:p@10.0.0.3:4222"
    assert servers(url) == [
        "nats://u:p@10.0.0.2:4222",
        "nats://10.0.0.1:4222",
        "nats://u:p@10.0.0.3:4222",
    ]
    assert shown(url).count("***@") == 2 and "u:p" not in shown(url)
    with pytest.raises(ValueError):
        servers(" , ")


async def test_a_dead_first_server_is_skipped(own_nats: str) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    bus = await Bus.connect(f"{dead},{own_nats}")
    try:
        assert bus.nc.is_connected
        assert bus.nc.connected_url is not None
        assert f"{bus.nc.connected_url.hostname}:{bus.nc.connected_url.port}" in own_nats
    finally:
        await bus.close()


async def test_launcher_starts_no_server_for_a_list(own_nats: str, tmp_path: Path) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    launcher = Launcher(Settings(nats_url=f"{dead},{own_nats}", nats_store_dir=str(tmp_path)))
    assert await launcher.plan_nats() is None  # one of them answers: use the cluster
    nowhere = Launcher(Settings(nats_url=f"{dead},nats://127.0.0.1:{free_port()}"))
    with pytest.raises(StartupError, match="no server answers"):
        await nowhere.plan_nats()  # (a SystemExit: not through another task)
