"""``peyvand serve``: run the homeserver until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl

from aiohttp import web

from peyvand.api.connections import HttpRunner
from peyvand.api.context import SERVICES_KEY
from peyvand.app import create_app
from peyvand.cli.allocator import release_free_memory, use_one_arena
from peyvand.cli.errors import CommandError
from peyvand.config.model import Config
from peyvand.federation.tls import server_ssl_context
from peyvand.services.appservice.registration import RegistrationError, load_registrations
from peyvand.services.appservice.registry import AppServiceRegistry

logger = logging.getLogger(__name__)

# How long in-flight requests get to finish after a stop signal.
SHUTDOWN_TIMEOUT_SECONDS = 10.0
# Allocations between young-generation collections (CPython's default is 700). A woken
# /sync allocates thousands of short-lived objects; at the default, collections were a
# quarter of a busy room's CPU (issue 15, bench.hot_room: 10.9-12.1 -> 8.5-8.6 s per
# 1,000 messages with 200 members syncing).
GC_YOUNG_THRESHOLD = 10_000


async def serve(config: Config) -> None:
    """Start the web app on ``config.bind:config.port`` (and, when ``federation.port`` is
    set, over TLS on ``config.bind:federation.port``) and stop cleanly on a signal."""
    federation_tls = _federation_ssl_context(config)  # before anything starts: fail early
    _check_appservices(config)
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    use_one_arena()  # before the database's thread starts
    app = await create_app(config)
    runner = HttpRunner(
        app, limits=config.http, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS
    )
    await runner.setup()
    release_free_memory()  # what start-up (migrations, route tables) allocated and freed
    try:
        site = web.TCPSite(runner, config.bind, config.port)
        await site.start()
        logger.info("Peyvand %s listening on %s", config.server_name, config.base_url)
        if federation_tls is not None:
            port = config.federation.port
            tls_site = web.TCPSite(runner, config.bind, port, ssl_context=federation_tls)
            await tls_site.start()
            logger.info("federation listener on https://%s:%s/", config.bind, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGHUP, _reload_appservices, app[SERVICES_KEY].appservices)
        await stop.wait()
        logger.info("stopping: finishing in-flight requests")
    finally:
        await runner.cleanup()
    logger.info("stopped")


def _check_appservices(config: Config) -> None:
    """Refuse to start on a registration file that does not check out (the message names
    the file and the field)."""
    try:
        load_registrations(config.app_service_config_files, config.server_name)
    except RegistrationError as exc:
        raise CommandError(f"application service registration: {exc}") from exc


def _reload_appservices(registry: AppServiceRegistry) -> None:
    """SIGHUP: read the registration files again; a bad one keeps the loaded set."""
    try:
        registry.reload()
    except RegistrationError as exc:
        logger.error("application services not reloaded, the loaded ones stay: %s", exc)


def _federation_ssl_context(config: Config) -> ssl.SSLContext | None:
    """The federation listener's TLS context, or None without a federation port."""
    federation = config.federation
    if federation.port is None:
        return None
    cert, key = federation.tls_certificate_path, federation.tls_private_key_path
    if cert is None or key is None:  # the loader refuses this; keep mypy and readers sure
        raise CommandError("'federation.port' needs a TLS certificate and key")
    try:
        return server_ssl_context(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise CommandError(
            f"cannot load the federation TLS certificate {cert} and key {key}: {exc}"
        ) from exc
