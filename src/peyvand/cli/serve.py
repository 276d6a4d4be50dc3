"""``peyvand serve``: run the homeserver until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from peyvand.app import create_app
from peyvand.config.model import Config

logger = logging.getLogger(__name__)

# How long in-flight requests get to finish after a stop signal.
SHUTDOWN_TIMEOUT_SECONDS = 10.0


async def serve(config: Config) -> None:
    """Start the web app on ``config.bind:config.port`` and stop cleanly on a signal."""
    app = await create_app(config)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.bind, config.port)
        await site.start()
        logger.info("Peyvand %s listening on %s", config.server_name, config.base_url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        logger.info("stopping: finishing in-flight requests")
    finally:
        await runner.cleanup()
    logger.info("stopped")
