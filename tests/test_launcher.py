"""The `funspeech` launcher under faults: kill -9 of each child is survived (REST ASR answers
again within 5 s), a crash loop ends it with the child's last lines, a signal at any time
stops every child in order, ports in use and other deployments' engines are told apart."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from funspeech.preflight import local_address
from tests.harness import (
    DATA,
    EngineProcess,
    LauncherProcess,
    pid_alive,
    running_nats,
    wait_engines,
    wait_until,
)

# a bound, not the speed target: the 5 s of issue 8 is measured by bench/launcher_recovery.py
# (1-3 s here); a loaded CI machine must not turn a slow recovery into a red test
RECOVERY_S = 30.0
FOX = (DATA / "en_fox.wav").read_bytes()
# the light engine with its small English model: a recognition takes well under a second
TINY = {"ASR_LIGHT_MODEL": "whisper-tiny.en", "ASR_LIGHT_MODELS": "whisper-tiny.en"}


def rest_asr(url: str, timeout: float = 10.0) -> bool:
    """One NLS REST recognition of en_fox.wav; True when it comes back with the fox."""
    request = urllib.request.Request(f"{url}/stream/v1/asr?format=wav", data=FOX, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return body.get("status") == 20000000 and "fox" in body.get("result", "").lower()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LauncherProcess]:
    launcher = LauncherProcess(tmp_path_factory.mktemp("launcher"), **TINY).start()
    try:
        launcher.wait_up()
        yield launcher
    finally:
        launcher.close()


@pytest.mark.parametrize("marker", ["nats-server", "-m engines --task asr", "-m bridge"])
def test_kill_9_of_a_child_is_survived(service: LauncherProcess, marker: str) -> None:
    assert rest_asr(service.url)
    victim = service.child(marker)
    assert victim, f"no {marker} child"
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    # each try bounded on its own: a request in flight at the kill may wait out its timeout
    wait_until(lambda: rest_asr(service.url, 5), RECOVERY_S, f"REST ASR after {marker}")
    took = time.monotonic() - killed
    print(f"kill -9 {marker}: REST ASR answered again {took:.2f} s after")
    assert took <= RECOVERY_S
    new = service.child(marker)
    assert new and new != victim
    assert f"(pid {victim}) was killed by SIGKILL; restarting it" in service.log()
    service.check()


def test_crash_loop_ends_the_launcher_with_the_childs_last_lines(tmp_path: Path) -> None:
    launcher = LauncherProcess(
        tmp_path,
        ASR_LIGHT_MODELS="no-such-model",
        LAUNCHER_RESTART_LIMIT="2",
        LAUNCHER_RESTART_BACKOFF="0.2",
    ).start()
    try:
        seen: set[int] = set()

        def ended() -> bool:
            seen.update(p for p in (launcher.child("nats-server"), launcher.child("bridge")) if p)
            return not launcher.alive()

        wait_until(ended, 60, "the launcher did not give up", interval=0.02)
        log = launcher.log()
        assert launcher.proc is not None and launcher.proc.returncode == 1, log
        assert "crash loop: engine cpu exited with code 2; it failed 3 times in a row" in log, log
        assert log.count("restarting it in") == 2, log
        tail = log.split("Its last lines:", 1)[1]
        assert "unknown light ASR model 'no-such-model'" in tail
        assert LauncherProcess.UP not in log
        assert len(seen) == 2 and not [p for p in seen if pid_alive(p)]
    finally:
        launcher.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_start_up_stops_every_child(tmp_path: Path, sig: int) -> None:
    launcher = LauncherProcess(tmp_path, **TINY).start()
    try:
        markers = ("nats-server", "-m engines", "-m bridge")
        pids = wait_until(
            lambda: all(p := [launcher.child(m) for m in markers]) and p,
            30,
            "children did not start",
            interval=0.02,
        )
        launcher.signal(sig)  # the engine is still loading: nothing announced yet
        assert launcher.proc is not None and launcher.proc.wait(60) == 0, launcher.log()
        assert LauncherProcess.UP not in launcher.log()
        assert not [p for p in pids if pid_alive(p)], launcher.log()
    finally:
        launcher.close()


def test_sigterm_when_up_stops_bridge_then_engine_then_nats(tmp_path: Path) -> None:
    """Also: a NATS_URL host name that resolves to this machine is local (own nats-server)."""
    host = socket.gethostname()
    if local_address(host) is None:
        pytest.skip(f"this machine's name {host} does not resolve to a local address")
    launcher = LauncherProcess(tmp_path, **TINY)
    launcher.env["NATS_URL"] = f"nats://{host}:{launcher.nats_port}"  # type: ignore[index]
    launcher.start()
    try:
        launcher.wait_up()
        assert "nats-server with JetStream on" in launcher.log()
        order = {m: launcher.child(m) for m in ("-m bridge", "-m engines", "nats-server")}
        launcher.signal(signal.SIGTERM)
        gone: list[str] = []

        def all_gone() -> bool:
            gone.extend(m for m, p in order.items() if m not in gone and not pid_alive(p))
            return len(gone) == len(order)

        wait_until(all_gone, 60, "children still running", interval=0.005)
        assert gone == list(order), gone
        assert launcher.proc is not None and launcher.proc.wait(10) == 0
    finally:
        launcher.close()


def test_reports_only_its_own_engines(tmp_path: Path) -> None:
    """Another deployment's engine on the same bus is neither waited for nor listed."""
    with running_nats(tmp_path / "js") as url:
        other = EngineProcess(url, tmp_path, **TINY).start()
        try:
            wait_engines(url, 1, procs=[other])
            launcher = LauncherProcess(tmp_path, NATS_URL=url, **TINY).start()
            try:
                launcher.wait_up()
                log = launcher.log()
                assert "using NATS at" in log
                summary = log.split(LauncherProcess.UP, 1)[1]
                lines = summary.splitlines()
                engines = [line for line in lines if line.startswith("  asr engine ")]
                own = launcher.child("-m engines --task asr")
                assert len(engines) == 1 and f"-cpu-{own}:" in engines[0], summary
                assert len([line for line in lines if line.startswith("  tts engine ")]) == 1
            finally:
                launcher.close()
        finally:
            other.stop()


def busy_socket() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


@pytest.mark.parametrize("which", ["PORT", "NATS_URL"])
def test_port_in_use_is_one_line_before_anything_starts(tmp_path: Path, which: str) -> None:
    sock, port = busy_socket()
    try:
        env = {"PORT": str(port)} if which == "PORT" else {"NATS_URL": f"nats://127.0.0.1:{port}"}
        launcher = LauncherProcess(tmp_path, **env).start()
        try:
            assert launcher.proc is not None and launcher.proc.wait(30) == 1
            lines = launcher.log().strip().splitlines()
            assert len(lines) == 1, lines
            expected = "already in use" if which == "PORT" else "not a NATS server"
            assert which in lines[0] and str(port) in lines[0] and expected in lines[0]
        finally:
            launcher.close()
    finally:
        sock.close()
