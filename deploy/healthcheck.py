"""Container health checks (docker-compose.yml, Kubernetes exec probes). Exit 0 = healthy.

  python deploy/healthcheck.py bridge          GET http://127.0.0.1:$PORT/health answers 200
  python deploy/healthcheck.py engine cuda:0   an engine for that device in this container
                                               answers the NATS micro-service PING
  python deploy/healthcheck.py engine cpu --task tts   the same for a TTS engine

The engine check asks every FunSpeech engine of the task for a PING ($SRV.PING.funspeech-asr,
$SRV.PING.funspeech-tts) and looks
for one whose engine id starts with this host's name and the device (engines/server.py builds
the id as <hostname>-<device>-<pid>), so it is healthy only once the model is loaded and the
engine serves the bus.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import sys
import urllib.error
import urllib.request

from bus.connect import servers, shown
from bus.subjects import Subjects, Task
from funspeech.settings import Settings

TIMEOUT_S = 3.0


def bridge_healthy(settings: Settings, timeout: float = TIMEOUT_S) -> bool:
    request = urllib.request.Request(f"http://127.0.0.1:{settings.port}/health")
    if settings.apptoken:
        request.add_header("X-NLS-Token", settings.apptoken)
        request.add_header("Authorization", f"Bearer {settings.apptoken}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"bridge unhealthy: {exc}", file=sys.stderr)
        return False


def engine_prefix(device: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{socket.gethostname()}-{device}-")


async def engine_healthy(
    settings: Settings, device: str, timeout: float = TIMEOUT_S, task: Task = "asr"
) -> bool:
    import nats  # only the engine check needs a bus connection

    async def quiet(_exc: Exception) -> None:
        pass  # the failure is reported once, by main()

    prefix = engine_prefix(device)
    nc = await asyncio.wait_for(
        nats.connect(
            servers(settings.nats_url),
            name="funspeech-healthcheck",
            connect_timeout=timeout,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            error_cb=quiet,
        ),
        timeout + 1,
    )
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        service = Subjects(settings.funspeech_namespace).service(task)
        await nc.publish(f"$SRV.PING.{service}", b"", reply=inbox)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except TimeoutError:
                break
            try:
                engine_id = json.loads(msg.data).get("metadata", {}).get("engine_id", "")
            except (ValueError, AttributeError):
                continue
            if engine_id.startswith(prefix):
                return True
        print(f"no engine {prefix}* answered on {shown(settings.nats_url)}", file=sys.stderr)
        return False
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["bridge", "engine"])
    parser.add_argument("device", nargs="?", default="cpu", help="engine device (cpu, cuda:0)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds to wait")
    parser.add_argument("--task", choices=["asr", "tts"], default="asr", help="engine's task")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.role == "bridge":
        return 0 if bridge_healthy(settings, args.timeout) else 1
    try:
        healthy = asyncio.run(engine_healthy(settings, args.device, args.timeout, args.task))
        return 0 if healthy else 1
    except Exception as exc:
        print(f"engine unhealthy: {exc!r}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
