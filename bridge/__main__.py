"""Run one bridge process: python -m bridge [--worker N]"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from aiohttp import web

from bridge import access_log
from bridge.app import create_app
from bridge.keys import LIVE
from funspeech.logs import settle_heap, setup_logging
from funspeech.settings import Settings

log = logging.getLogger("funspeech.bridge")

# After the drain (BRIDGE_DRAIN_TIMEOUT) every session has been ended; what aiohttp still waits
# for on cleanup is those handlers closing, and REST requests the drain outlasted are cancelled.
SHUTDOWN_GRACE_S = 3.0


async def serve(settings: Settings) -> None:
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_GRACE_S,
        access_log_class=access_log.AccessLogger,
        access_log=access_log.LOGGER if settings.access_log else None,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_port=settings.workers > 1)
    await site.start()
    settle_heap()
    log.info("bridge listening on http://%s:%d", settings.host, settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    drain = settings.bridge_drain_timeout
    log.info("bridge stopping: no new connections, draining for up to %g s", drain)
    await site.stop()  # stop listening; open connections go on
    await app[LIVE].drain(drain)
    await runner.cleanup()
    log.info("bridge stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description="FunSpeech bridge (HTTP/WebSocket edge)")
    parser.add_argument("--worker", type=int, default=1)
    args = parser.parse_args()
    settings = Settings()
    setup_logging(settings, f"bridge-{args.worker}")
    if settings.access_log:  # whatever LOG_LEVEL says
        access_log.LOGGER.setLevel(logging.INFO)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
