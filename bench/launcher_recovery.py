"""Time from `kill -9` of each child of a running `funspeech` to REST ASR answering again.

    python -m bench.launcher_recovery [--rounds 3] [--env ASR_LIGHT_MODEL=whisper-tiny.en]

Starts the launcher (own nats-server, the light engine, one bridge, ephemeral ports), then per
round and child kind: one REST recognition of tests/data/en_fox.wav as the baseline, kill -9,
and REST requests until one answers with the text. Reported per kind: seconds until the first
request that then succeeded was sent (recovered) and until it was answered (answered; includes
one recognition, the baseline shows how long that takes).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

from tests.harness import LauncherProcess
from tests.test_launcher import rest_asr

KINDS = {"nats-server": "nats-server", "engine": "-m engines", "bridge": "-m bridge"}
LIMIT_S = 30.0


def recover(launcher: LauncherProcess, marker: str) -> tuple[float, float, float]:
    began = time.monotonic()
    assert rest_asr(launcher.url), "service not answering before the kill"
    baseline = time.monotonic() - began
    os.kill(launcher.child(marker), signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < LIMIT_S:
        sent = time.monotonic()
        if rest_asr(launcher.url, LIMIT_S):
            return sent - killed, time.monotonic() - killed, baseline
        time.sleep(0.02)
    raise TimeoutError(f"no answer {LIMIT_S:g} s after killing {marker}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for funspeech")
    args = parser.parse_args()
    env = dict(kv.split("=", 1) for kv in args.env)
    with tempfile.TemporaryDirectory(prefix="funspeech-recovery-") as tmp:
        launcher = LauncherProcess(Path(tmp), **env).start()
        try:
            launcher.wait_up()
            print("kind         recovered s   answered s   (one recognition s)")
            for kind, marker in KINDS.items():
                runs = [recover(launcher, marker) for _ in range(args.rounds)]
                rec, ans, base = (statistics.median(r[i] for r in runs) for i in range(3))
                worst = max(r[1] for r in runs)
                print(f"{kind:12} {rec:11.2f} {ans:12.2f}   ({base:.2f})  worst answered "
                      f"{worst:.2f}, {args.rounds} rounds")  # fmt: skip
        finally:
            launcher.close()


if __name__ == "__main__":
    main()
