"""The one test and bench harness: real nats-server (ephemeral port, readiness read from its
stderr), engine, bridge and launcher processes with log files, waits that poll a condition with a
bound, raw NLS frames and the NLS event-order check. tests/conftest.py and bench/*.py use it;
the launcher shares its process basics (funspeech/procs.py)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
from nats.aio.client import Client

from funspeech.procs import (
    NATS_READY,
    Tail,
    die_with_parent,
    exit_reason,
    free_port,
    nats_listening_port,
    nats_server_command,
)

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
__all__ = ["DATA", "ROOT", "free_port"]


def wait_until(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll `condition` until it returns something truthy (returned), at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout:g} s")
        time.sleep(interval)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


def wait_port(port: int, timeout: float = 15.0, proc: Proc | None = None) -> None:
    def up() -> bool:
        if proc is not None:
            proc.check()
        return port_open(port)

    wait_until(up, timeout, f"nothing listens on port {port}")


class Proc:
    """A child process whose output goes to a log file. Started from the main thread it gets
    the parent-death signal, so it never outlives the test run or the bench."""

    def __init__(
        self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, new_session: bool = False) -> Proc:
        main = threading.current_thread() is threading.main_thread()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=new_session,
                preexec_fn=die_with_parent if main else None,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check(self) -> None:
        """Raise with the tail of its log if it has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log()[-3000:]
            raise RuntimeError(f"{self.name} {exit_reason(self.proc.returncode)}:\n{tail}")

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; the exit code."""
        assert self.proc is not None
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.wait(5)


class NatsServer(Proc):
    """nats-server with JetStream on an ephemeral port (-p -1): the port and readiness come
    from its stderr, which is kept for the error message if it fails to start."""

    def __init__(self, store: Path, log_dir: Path | None = None) -> None:
        super().__init__("nats-server", nats_server_command("127.0.0.1", -1, store),
                         log_dir or store.parent)  # fmt: skip
        self.port = 0
        self.tail = Tail()
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, *, new_session: bool = False, timeout: float = 15.0) -> NatsServer:
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=new_session,
            preexec_fn=die_with_parent
            if threading.current_thread() is threading.main_thread()
            else None,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout) or not self.port:
            self.stop(5)
            raise RuntimeError(f"nats-server did not start:\n{self.tail.text()}")
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        with open(self.log_path, "wb") as log:
            for raw in self.proc.stderr:
                log.write(raw)
                log.flush()
                line = raw.decode(errors="replace")
                self.tail.add(line)
                self.port = self.port or nats_listening_port(line) or 0
                if NATS_READY in line:
                    self._ready.set()
        self._ready.set()  # exited: start() stops waiting


class RestartableNats:
    """nats-server with JetStream on a fixed port and store: it can be killed and started
    again where its clients reconnect."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: Proc | None = None

    def start(self) -> None:
        argv = nats_server_command("127.0.0.1", self.port, self.tmp / "jetstream")
        self.proc = Proc("nats-server", argv, self.tmp).start()
        wait_port(self.port, 15, self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()


class ProcessGroup:
    """Named processes stopped together, last started first (bridge and engines still reach
    nats-server while they stop)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, Proc] = {}

    def add(self, name: str, proc: Proc) -> Proc:
        self.procs[name] = proc
        return proc

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        """In its own session: a Ctrl-C reaches the caller only, which stops them in order."""
        return self.add(name, Proc(name, argv, self.log_dir, env).start(new_session=True))

    def pids(self, prefix: str = "") -> list[int]:
        return [p.pid for n, p in self.procs.items() if n.startswith(prefix)]

    def check(self) -> None:
        for proc in self.procs.values():
            proc.check()

    def stop_all(self, timeout: float = 15.0) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.proc is not None:
                proc.stop(timeout)


@contextlib.contextmanager
def running_nats(store: Path) -> Iterator[str]:
    """A nats-server with JetStream on an ephemeral port; yields its URL."""
    server = NatsServer(store).start()
    try:
        yield server.url
    finally:
        server.stop(10)


def base_env(nats_url: str, **env: str) -> dict[str, str]:
    return {**os.environ, "NATS_URL": nats_url, "LOG_FILE": "", **env}


class EngineProcess(Proc):
    """A real engine process (python -m engines) with its own environment."""

    def __init__(
        self, nats_url: str, log_dir: Path, device: str = "cpu", task: str = "asr", **env: str
    ) -> None:
        defaults = {"LOG_LEVEL": "INFO", "DATA_DIR": str(ROOT / "data")}
        argv = [sys.executable, "-m", "engines", "--task", task, "--device", device]
        name = "engine" if task == "asr" else f"{task}-engine"
        super().__init__(name, argv, log_dir, base_env(nats_url, **(defaults | env)))

    def start(self, *, new_session: bool = False) -> EngineProcess:
        super().start(new_session=new_session)
        return self


class BridgeProcess(Proc):
    """A real bridge process (python -m bridge) on an ephemeral port."""

    def __init__(self, nats_url: str, log_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        env = {"HOST": "127.0.0.1", "PORT": str(self.port), **env}
        super().__init__("bridge", [sys.executable, "-m", "bridge"], log_dir,
                         base_env(nats_url, **env))  # fmt: skip

    def start(self, *, new_session: bool = False, timeout: float = 30.0) -> BridgeProcess:
        super().start(new_session=new_session)
        wait_port(self.port, timeout, self)
        return self


async def wait_engines_async(
    nats_url: str,
    count: int,
    timeout: float = 60.0,
    procs: list[Proc] | None = None,
    task: str | None = None,
) -> None:
    """Until `count` engines (of `task`) announce themselves; fails early if one of `procs`
    exits."""
    from bus.client import Bus

    bus = await Bus.connect(nats_url)
    try:
        async with asyncio.timeout(timeout):
            while len(bus.directory.engines(task)) < count:  # type: ignore[arg-type]
                for proc in procs or []:
                    proc.check()
                await bus.directory.wait_change(0.2)
    finally:
        await bus.close()


def wait_engines(
    nats_url: str,
    count: int,
    timeout: float = 60.0,
    procs: list[Proc] | None = None,
    task: str | None = None,
) -> None:
    """Blocking; also from a thread that runs an event loop (newer pytest-asyncio runs sync
    fixtures inside its loop): then the wait runs in a thread of its own."""
    coro = wait_engines_async(nats_url, count, timeout, procs, task)
    wait = functools.partial(asyncio.run, coro)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return wait()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(wait).result()


# ---------------------------------------------------------------- process trees


def children_of(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rpartition(")")[2].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = children_of(todo.pop())
        out += kids
        todo += kids
    return out


def pid_alive(pid: int) -> bool:
    """Running (a zombie or a reaped pid counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def kill_tree(pid: int) -> None:
    """SIGKILL a process and everything below it (cleanup after a failed test)."""
    for p in [*descendants(pid), pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


# ---------------------------------------------------------------- NLS frames and event order


def nls_frame(
    name: str,
    task_id: str,
    payload: dict[str, Any] | None = None,
    namespace: str = "SpeechTranscriber",
    appkey: str = "test-appkey",
) -> str:
    """A client frame of the NLS WebSocket protocol."""
    header = {"message_id": uuid.uuid4().hex, "task_id": task_id, "appkey": appkey}
    header |= {"namespace": namespace, "name": name}
    return json.dumps({"header": header, "payload": payload or {}})


def nls_order_errors(names: list[str]) -> list[str]:
    """What is wrong with the order of a SpeechTranscriber session's events ([] = nothing):
    TranscriptionStarted, then sentences (SentenceBegin, TranscriptionResultChanged*,
    SentenceEnd), then TranscriptionCompleted; TaskFailed may end it at any point."""
    errors: list[str] = []
    if not names:
        return ["no events"]
    if names[0] not in ("TranscriptionStarted", "TaskFailed"):
        errors.append(f"first event {names[0]}")
    in_sentence = False
    for i, name in enumerate(names[1:], 1):
        last = i == len(names) - 1
        if name == "SentenceBegin":
            if in_sentence:
                errors.append(f"{i}: SentenceBegin inside a sentence")
            in_sentence = True
        elif name in ("TranscriptionResultChanged", "SentenceEnd"):
            if not in_sentence:
                errors.append(f"{i}: {name} outside a sentence")
            in_sentence = name != "SentenceEnd"
        elif name in ("TranscriptionCompleted", "TaskFailed"):
            if not last:
                errors.append(f"{i}: events after {name}")
            if name == "TranscriptionCompleted" and in_sentence:
                errors.append(f"{i}: completed inside an open sentence")
        else:
            errors.append(f"{i}: unexpected {name}")
    if names[-1] not in ("TranscriptionCompleted", "TaskFailed"):
        errors.append(f"ends with {names[-1]}")
    return errors


# ---------------------------------------------------------------- the launcher


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class LauncherProcess(Proc):
    """`python -m funspeech` on ephemeral ports with its own nats-server store."""

    UP = "FunSpeech is up"

    def __init__(self, tmp: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.nats_port = free_port()
        defaults = {
            "NATS_URL": f"nats://127.0.0.1:{self.nats_port}",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "LOG_FILE": "",
            "NATS_STORE_DIR": str(tmp / "nats"),
            "DATA_DIR": str(ROOT / "data"),
            "ASR_GPUS": "cpu",
        }
        argv = [sys.executable, "-m", "funspeech"]
        super().__init__("funspeech", argv, tmp, {**os.environ, **defaults, **env})

    def wait_up(self, timeout: float = 90.0) -> None:
        def up() -> bool:
            self.check()
            return self.UP in self.log()

        wait_until(up, timeout, "the launcher did not say it is up")

    def child(self, marker: str) -> int:
        """The pid of its child whose command line contains `marker` (0 = none)."""
        return next((p for p in children_of(self.pid) if marker in cmdline(p)), 0)

    def close(self) -> None:
        """After a test, passed or failed: stop it, and kill anything it left behind."""
        if self.proc is None:
            return
        tree = descendants(self.pid)
        if self.alive():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.signal(signal.SIGTERM)
                self.proc.wait(60)
        kill_tree(self.pid)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)


async def check_malformed_opens(nc: Client, subject: str) -> None:
    """A plain client's bad open requests on an entry subject (broken JSON, a JSON object without
    events_subject, bytes that are no msgpack): 40000002 naming the reason, as JSON when sent as
    JSON or asked for in the header, msgpack otherwise; then a good open works (and is aborted)."""
    asked = {"Fs-Encoding": "json"}
    for body, headers in ((b'{"session_id": 5', None), (b"{}", None), (b"\xc1", asked)):
        answer = json.loads((await nc.request(subject, body, 5, headers=headers)).data)
        assert answer["ok"] is False and answer["code"] == 40000002, answer
        assert answer["message"].startswith("Bad open:"), answer
        assert body != b"{}" or "events_subject" in answer["message"], answer
    reply = await nc.request(subject, b"\xc1", timeout=5)
    assert msgpack.unpackb(reply.data)["code"] == 40000002
    good = json.dumps({"events_subject": nc.new_inbox()}).encode()
    opened = json.loads((await nc.request(subject, good, timeout=5)).data)
    assert opened["ok"] is True and opened["session_id"], opened
    await nc.publish(opened["control_subject"], json.dumps({"op": "abort"}).encode())
