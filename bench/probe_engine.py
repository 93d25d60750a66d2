"""An engine process on the probe backend, for bench/bridge_bus.py:

    python -m bench.probe_engine --nats-url nats://127.0.0.1:PORT [--capacity 10000]

It is the real AsrEngine (engines/asr_engine.py). A second, bench-only NATS connection answers
requests on --control-subject (JSON): {"op": "status"}, {"op": "reset"} (clear the latency log)
and {"op": "dump", "path": ...} (write the log as .npz: sent, received in monotonic ns).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal

import nats
import numpy as np
from nats.aio.msg import Msg

from bench.probe_backend import ProbeAsrBackend
from bus.connect import servers
from engines.asr_engine import AsrEngine

CONTROL_SUBJECT = "bench.probe.ctl"


async def serve(nats_url: str, capacity: int, control_subject: str) -> None:
    backend = ProbeAsrBackend(capacity)
    engine = AsrEngine(
        backend, nats_url=nats_url, device="cpu", capacity=capacity, drain_timeout=2.0
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def on_control(msg: Msg) -> None:
        request = json.loads(msg.data or b"{}")
        reply: dict[str, object] = {"pid": os.getpid(), "sessions": len(engine.sessions)}
        if request.get("op") == "reset":
            backend.log.clear()
        elif request.get("op") == "dump":
            sent, received = backend.log.arrays()
            np.savez(request["path"], sent=sent, received=received)
            reply["count"] = int(sent.size)
        await msg.respond(json.dumps(reply).encode())

    control = await nats.connect(servers(nats_url), name="bench-probe-control")
    await control.subscribe(control_subject, cb=on_control)
    try:
        await engine.run(stop)
    finally:
        await control.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description="AsrEngine on the probe backend (benchmark)")
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--capacity", type=int, default=10000)
    parser.add_argument("--control-subject", default=CONTROL_SUBJECT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve(args.nats_url, args.capacity, args.control_subject))


if __name__ == "__main__":
    main()
