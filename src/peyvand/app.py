"""Composition root: builds storage, services and the web app from config.

The only module that names a concrete storage backend. Owns start-up and shut-down.
"""

from __future__ import annotations

import logging

from aiohttp import web

from peyvand.api.client import CLIENT_ROUTE_TABLES
from peyvand.api.server import build_web_app
from peyvand.config import Config, DatabaseConfig
from peyvand.events.signing import parse_signing_keys
from peyvand.services.auth import AuthService
from peyvand.services.container import Services
from peyvand.services.registration import RegistrationService
from peyvand.storage.accounts import AccountStore
from peyvand.storage.migrations import run_migrations
from peyvand.storage.postgres import PostgresDatabase
from peyvand.storage.sqlite import SqliteDatabase

logger = logging.getLogger(__name__)


async def open_database(config: DatabaseConfig) -> SqliteDatabase | PostgresDatabase:
    if config.is_postgres:
        return await PostgresDatabase.open(config.url)
    return await SqliteDatabase.open(config.sqlite_path)


async def create_app(config: Config) -> web.Application:
    """Open the database, migrate it, wire every service and return the web app."""
    db = await open_database(config.database)
    applied = await run_migrations(db)
    if applied:
        logger.info("applied schema migrations %s", applied)
    signing_key = parse_signing_keys(config.signing_key_path.read_text(encoding="utf-8"))[0]
    accounts = AccountStore(db)
    auth = AuthService(config, accounts)
    services = Services(
        config=config,
        auth=auth,
        registration=RegistrationService(config, accounts, auth),
    )
    app = build_web_app(services, CLIENT_ROUTE_TABLES)
    del signing_key

    async def close(_: web.Application) -> None:
        await db.close()

    app.on_cleanup.append(close)
    return app
