"""A FunSpeech deployment across simulated hosts (tests/netns.py), for tests/test_cluster.py and
bench/cluster_scale.py: a 3-node NATS cluster with JetStream, one node per host, each started
from this repository's nats.conf with the cluster flags docker-compose.yml's `cluster` profile
uses; engines and bridges on hosts of the caller's choice, each connected to its local node
first with the other nodes as fallbacks (NATS_URL lists all three, local first)."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import nats

from funspeech.procs import nats_server_binary
from tests.harness import ROOT, EngineProcess, Proc, base_env, wait_until
from tests.netns import Host, Network

NATS_PORT = 4222
ROUTE_PORT = 6222
HTTP_PORT = 8222  # monitoring, as nats.conf sets it
BRIDGE_PORT = 8000
# what every FunSpeech process of a 3-node cluster sets (docs/deployment.md): streams and
# buckets it creates are R3, whoever creates them first
CLUSTER_ENV = {"JETSTREAM_REPLICAS": "3"}
CLUSTER_NAME = "funspeech"
T = TypeVar("T")


def node_config(store: Path) -> str:
    """nats.conf as shipped, with the JetStream store moved to `store` (nats-server refuses a
    second store_dir, so it cannot be given as a flag)."""
    text = (ROOT / "nats.conf").read_text(encoding="utf-8")
    text, count = re.subn(r'(?m)^(\s*store_dir:\s*)"[^"]*"', rf'\1"{store}"', text)
    assert count == 1, "nats.conf: one store_dir line expected"
    return text


def node_flags(name: str, addr: str, peers: list[str]) -> list[str]:
    """What makes nats.conf a cluster node (docker-compose.yml's `cluster` profile passes the
    same, with addr 0.0.0.0 and the service names as peers)."""
    routes = ",".join(f"nats://{p}:{ROUTE_PORT}" for p in peers)
    return ["--addr", addr, "--name", name, "--cluster_name", CLUSTER_NAME,
            "--cluster", f"nats://{addr}:{ROUTE_PORT}", "--routes", routes]  # fmt: skip


class NatsNode(Proc):
    """One cluster node on its host: nats.conf + --name/--cluster/--routes, as in compose."""

    def __init__(self, host: Host, name: str, nodes: list[Host], tmp: Path) -> None:
        self.host = host
        store = tmp / name
        store.mkdir(parents=True, exist_ok=True)
        config = tmp / f"{name}.conf"
        config.write_text(node_config(store), encoding="utf-8")
        flags = node_flags(name, host.addr, [h.addr for h in nodes])
        command = [nats_server_binary(), "-c", str(config), *flags]
        super().__init__(name, host.argv(command), tmp)

    @property
    def url(self) -> str:
        return f"nats://{self.host.addr}:{NATS_PORT}"


class BridgeInHost(Proc):
    """python -m bridge on a host, listening on the host's address."""

    def __init__(self, host: Host, nats_url: str, log_dir: Path, **env: str) -> None:
        self.host = host
        self.url = f"http://{host.addr}:{BRIDGE_PORT}"
        self.ws_url = f"ws://{host.addr}:{BRIDGE_PORT}"
        env = {"HOST": host.addr, "PORT": str(BRIDGE_PORT), **env}
        argv = host.argv([sys.executable, "-m", "bridge"])
        super().__init__(f"bridge-{host.name}", argv, log_dir, base_env(nats_url, **env))

    def start(self, *, new_session: bool = False, timeout: float = 60.0) -> BridgeInHost:
        super().start(new_session=new_session)

        def up() -> bool:
            self.check()
            return self.host.port_open(BRIDGE_PORT)

        wait_until(up, timeout, f"{self.name} does not listen", interval=0.1)
        return self


class Deployment:
    """The NATS cluster on the first three hosts of `nats_hosts`, and what runs beside it."""

    def __init__(self, net: Network, nats_hosts: list[Host], client: Host, tmp: Path) -> None:
        self.net = net
        self.client = client
        self.tmp = tmp
        self.nodes: dict[str, NatsNode] = {}
        for i, host in enumerate(nats_hosts, 1):  # routes to all, its own included, as compose
            self.nodes[host.name] = NatsNode(host, f"n{i}", nats_hosts, tmp)
        self.procs: list[Proc] = []

    # ---- addresses
    def urls(self, host: Host) -> str:
        """NATS_URL for a process on `host`: its own node first (when it has one), then the
        others."""
        local = [n.url for n in self.nodes.values() if n.host is host]
        return ",".join(local + [n.url for n in self.nodes.values() if n.host is not host])

    def node_of(self, host: Host) -> NatsNode:
        return self.nodes[host.name]

    # ---- life cycle
    def start(self, timeout: float = 60.0) -> Deployment:
        for node in self.nodes.values():
            node.start()
        self.wait_jetstream(timeout)
        return self

    def wait_jetstream(self, timeout: float = 60.0, nodes: list[NatsNode] | None = None) -> None:
        """Until every node (or those given) answers JetStream requests (the cluster has a
        meta leader and the node is part of it)."""

        async def ready(url: str) -> bool:
            try:
                nc = await nats.connect(
                    url, connect_timeout=1, allow_reconnect=False, error_cb=_quiet
                )
            except Exception:
                return False
            try:
                await nc.jetstream(timeout=1).account_info()
                return True
            except Exception:
                return False
            finally:
                await nc.close()

        for node in nodes or list(self.nodes.values()):

            def up(node: NatsNode = node) -> bool:
                node.check()
                return run_in(self.client, lambda: ready(node.url))

            wait_until(up, timeout, f"{node.name}: no JetStream", interval=0.25)

    def engine(self, host: Host, task: str = "asr", **env: str) -> EngineProcess:
        """An engine process on `host` (not started)."""
        proc = EngineProcess(self.urls(host), self.tmp, task=task, **(CLUSTER_ENV | env))
        proc.argv = host.argv(proc.argv)
        proc.name = f"{proc.name}-{host.name}"
        self.procs.append(proc)
        return proc

    def bridge(self, host: Host, **env: str) -> BridgeInHost:
        proc = BridgeInHost(host, self.urls(host), self.tmp, **(CLUSTER_ENV | env))
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        """Engines and bridges first (they still reach NATS while they stop), then the nodes;
        Network.close kills whatever is left."""
        for proc in reversed(self.procs):
            if proc.alive():
                proc.stop(10)
        for node in self.nodes.values():
            if node.alive():
                node.stop(5)


async def _quiet(exc: Exception) -> None:
    """nats-py prints connection errors; a node that is still starting causes them."""


def routes(host: Host, peer: str) -> int:
    """Route connections the node on `host` has to node `peer` (its monitoring /routez)."""

    def ask() -> int:
        url = f"http://{host.addr}:{HTTP_PORT}/routez"
        with urllib.request.urlopen(url, timeout=2) as r:
            found = json.load(r)["routes"]
        return sum(route.get("remote_name") == peer for route in found)

    return host.call(ask)


def run_in(host: Host, main: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine in a fresh event loop inside `host` and return its result."""
    return host.call(lambda: asyncio.run(main()))  # type: ignore[arg-type]


def logs(procs: list[Any]) -> str:
    """The tail of each process's log, for an assertion message."""
    return "\n".join(f"--- {p.name}\n{p.log()[-2500:]}" for p in procs)
