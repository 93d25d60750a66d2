"""Run one bridge process: python -m bridge [--worker N]"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from aiohttp import web

from bridge.app import create_app
from funspeech.logs import settle_heap, setup_logging
from funspeech.settings import Settings

log = logging.getLogger("funspeech.bridge")


async def serve(settings: Settings) -> None:
    runner = web.AppRunner(create_app(settings), handle_signals=False, shutdown_timeout=5.0)
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
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="FunSpeech bridge (HTTP/WebSocket edge)")
    parser.add_argument("--worker", type=int, default=1)
    args = parser.parse_args()
    settings = Settings()
    setup_logging(settings, f"bridge-{args.worker}")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
