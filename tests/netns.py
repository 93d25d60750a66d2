"""Hosts as Linux network namespaces, for multi-host tests and benches (tests/test_cluster.py,
bench/cluster_scale.py).

    with Network() as net:                      # a switch: a Linux bridge in a namespace
        h1 = net.add_host("h1")                 # a namespace with eth0 10.213.0.1/24 on it
        proc = Proc("x", h1.argv([...]), logs)  # a command run inside h1 (`ip netns exec`)
        with net.add_host("client").entered():  # this thread's sockets now live in "client"
            ...
        net.cut(h1); net.restore(h1)            # pull and put back h1's cable

Everything is made by the test and removed on exit, failed or not: the namespaces (and with them
the bridge and the veth pairs) and every process left inside them. Addresses are private and
exist only inside these namespaces; nothing changes in the machine's own network namespace.
Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2: `unavailable()` says why not.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count(1)
T = TypeVar("T")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def unavailable() -> str | None:
    """Why hosts cannot be simulated here (None: they can): tried for real, with a namespace
    made and removed at once."""
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
    name = f"fsprobe{os.getpid()}"
    try:
        _ip("netns", "add", name)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        _ip("-n", name, "link", "add", "probe0", "type", "bridge")
    except RuntimeError as exc:
        return f"cannot create a Linux bridge in a namespace: {exc}"
    finally:
        _ip("netns", "del", name, check=False)
    return None


def _setns(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class Host:
    """One simulated machine: a namespace with loopback and eth0 on the switch."""

    def __init__(self, net: Network, name: str, index: int) -> None:
        self.net = net
        self.name = name
        self.ns = f"{net.tag}-{name}"
        self.addr = f"{net.subnet}.{index}"
        self.port = f"p{index}"  # its cable's end on the switch (in the switch's namespace)

    def argv(self, command: list[str]) -> list[str]:
        """`command` run inside this host (`ip netns exec` execs it: the pid stays the same)."""
        return ["ip", "netns", "exec", self.ns, *command]

    def run(self, command: list[str], timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(command), capture_output=True, text=True, timeout=timeout)

    @contextlib.contextmanager
    def entered(self) -> Iterator[Host]:
        """Run the calling thread inside this host: sockets it opens belong to the host's
        network. Processes it starts start there too. Back where it was on exit."""
        own = f"/proc/self/task/{threading.get_native_id()}/ns/net"
        back = os.open(own, os.O_RDONLY)
        try:
            _setns(NETNS_DIR / self.ns)
            try:
                yield self
            finally:
                if _libc.setns(back, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back to the original network")
        finally:
            os.close(back)

    def call(self, fn: Callable[[], T]) -> T:
        """fn() in a new thread that runs inside this host; its result or its exception."""
        out: dict[str, Any] = {}

        def target() -> None:
            try:
                with self.entered():
                    out["result"] = fn()
            except BaseException as exc:
                out["error"] = exc

        thread = threading.Thread(target=target, name=f"in-{self.name}")
        thread.start()
        thread.join()
        if "error" in out:
            raise out["error"]
        return out["result"]

    def port_open(self, port: int, addr: str | None = None) -> bool:
        """Whether something listens on addr:port as seen from this host."""
        with self.entered(), socket.socket() as s:
            s.settimeout(1.0)
            return s.connect_ex((addr or self.addr, port)) == 0

    def pids(self) -> list[int]:
        result = _ip("netns", "pids", self.ns, check=False)
        return [int(p) for p in result.stdout.split()]


class Network:
    """A switch (Linux bridge in a namespace of its own) and the hosts cabled to it."""

    def __init__(self, subnet: str = "10.213.0") -> None:
        self.tag = f"fs{os.getpid()}x{next(_counter)}"
        self.subnet = subnet
        self.switch = f"{self.tag}-sw"
        self.hosts: dict[str, Host] = {}

    def __enter__(self) -> Network:
        try:
            _ip("netns", "add", self.switch)
            _ip("-n", self.switch, "link", "set", "lo", "up")
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_host(self, name: str) -> Host:
        host = Host(self, name, len(self.hosts) + 1)
        self.hosts[name] = host
        _ip("netns", "add", host.ns)
        _ip("-n", host.ns, "link", "set", "lo", "up")
        # a veth pair made in the host, its far end moved to the switch and enslaved to br0
        _ip("-n", host.ns, "link", "add", "eth0", "type", "veth", "peer", "name", host.port)
        _ip("-n", host.ns, "link", "set", host.port, "netns", self.switch)
        _ip("-n", host.ns, "addr", "add", f"{host.addr}/24", "dev", "eth0")
        _ip("-n", host.ns, "link", "set", "eth0", "up")
        _ip("-n", self.switch, "link", "set", host.port, "master", "br0")
        _ip("-n", self.switch, "link", "set", host.port, "up")
        return host

    def cut(self, host: Host) -> None:
        """Pull the host's cable: every packet to and from it is dropped silently (its end
        keeps its address, nothing it runs is told)."""
        _ip("-n", self.switch, "link", "set", host.port, "down")

    def restore(self, host: Host) -> None:
        _ip("-n", self.switch, "link", "set", host.port, "up")

    def close(self) -> None:
        """Kill what still runs in our namespaces (only our tests start processes there), then
        delete them; the veths and the bridge go with them."""
        names = [h.ns for h in self.hosts.values()] + [self.switch]
        for ns in names:
            for pid in _ip("netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 10
        for ns in names:
            while _ip("netns", "pids", ns, check=False).stdout.split():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            _ip("netns", "del", ns, check=False)
