"""Run WORKERS bridge processes side by side: python deploy/run_bridges.py

The bridge container's command (docker-compose.yml). `python -m bridge` is one process; this
starts WORKERS of them (`python -m bridge --worker N`, sharing PORT through SO_REUSEPORT, which
the bridge turns on when WORKERS > 1), passes SIGTERM/SIGINT on to all of them and waits for
them to finish. If one exits on its own, the others are stopped too and the exit code is
non-zero, so the container's restart policy brings back a complete set.

With WORKERS=1 it simply becomes `python -m bridge --worker 1` (exec, no extra process).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from funspeech.settings import Settings

POLL_S = 0.2


def bridge_command(worker: int) -> list[str]:
    return [sys.executable, "-m", "bridge", "--worker", str(worker)]


def main() -> int:
    workers = Settings().workers
    if workers == 1:
        os.execv(sys.executable, bridge_command(1))
    procs = [subprocess.Popen(bridge_command(n)) for n in range(1, workers + 1)]
    stopping = False

    def stop(signum: int = signal.SIGTERM, _frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    failed = 0
    while True:
        codes = [proc.poll() for proc in procs]  # poll every one: it reaps and sets returncode
        if all(code is not None for code in codes):
            break
        if not stopping:
            exited = [proc for proc in procs if proc.returncode is not None]
            if exited:
                failed = exited[0].returncode or 1
                print(
                    f"bridge worker pid {exited[0].pid} exited with {exited[0].returncode}; "
                    "stopping the others",
                    file=sys.stderr,
                    flush=True,
                )
                stop()
        time.sleep(POLL_S)
    return failed


if __name__ == "__main__":
    sys.exit(main())
