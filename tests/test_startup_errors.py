"""A wrong environment ends every process with one clear line naming the setting, never a
traceback: bad values, a backend without its extra, directories that cannot be written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ROOT, free_port

# each process's entry point, run as `python -c` so that a module can be hidden first
MAINS = {
    "launcher": "from funspeech.__main__ import main",
    "bridge": "from bridge.__main__ import main",
    "engine": "from engines.__main__ import main",
}


def run(process: str, tmp: Path, hide: str = "", **env: str) -> list[str]:
    """Start a process; the lines it printed (it must fail within the bound)."""
    code = "import sys\n"
    if hide:  # as if the package were not installed
        code += f"for m in {hide.split(',')!r}: sys.modules[m] = None\n"
    code += f"sys.argv = ['x']\n{MAINS[process]}\nmain()\n"
    base = {"LOG_FILE": "", "DATA_DIR": str(tmp / "data"), "NATS_URL": "nats://127.0.0.1:1"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = (result.stdout + result.stderr).strip()
    assert result.returncode != 0, out
    assert "Traceback" not in out, out
    return out.splitlines()


@pytest.mark.parametrize("process", list(MAINS))
def test_bad_log_level_names_the_variable_and_the_values(process: str, tmp_path: Path) -> None:
    lines = run(process, tmp_path, LOG_LEVEL="TRACE")
    assert lines == [
        "invalid setting LOG_LEVEL='TRACE': Input should be 'DEBUG', 'INFO', 'WARNING', "
        "'ERROR' or 'CRITICAL'"
    ]


def test_one_line_per_bad_variable(tmp_path: Path) -> None:
    lines = run("bridge", tmp_path, PORT="eighty", WORKERS="0", ASR_BACKEND="whisper")
    assert [line.split("=")[0] for line in lines] == [
        "invalid setting PORT",
        "invalid setting WORKERS",
        "invalid setting ASR_BACKEND",
    ]


@pytest.mark.parametrize("process", ["launcher", "engine"])
def test_funasr_backend_without_the_extra_says_which_extra(process: str, tmp_path: Path) -> None:
    lines = run(process, tmp_path, hide="funasr,torch", ASR_BACKEND="funasr")
    assert len(lines) == 1, lines
    assert "ASR_BACKEND=funasr needs the funasr extra (torch, funasr" in lines[0]
    assert 'pip install -e ".[funasr]"' in lines[0]


@pytest.mark.parametrize("process", list(MAINS))
@pytest.mark.parametrize("setting", ["LOG_FILE", "DATA_DIR"])
def test_unwritable_directory_names_the_setting(process: str, setting: str, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    value = str(blocker / "sub" / ("funspeech.log" if setting == "LOG_FILE" else ""))
    lines = run(process, tmp_path, **{setting: value})
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{setting}=") and "cannot write" in lines[0]


def test_unwritable_nats_store_names_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    url = f"nats://127.0.0.1:{free_port()}"
    lines = run("launcher", tmp_path, NATS_URL=url, NATS_STORE_DIR=str(blocker))
    assert len(lines) == 1 and "NATS_STORE_DIR=" in lines[0] and "cannot write" in lines[0]
