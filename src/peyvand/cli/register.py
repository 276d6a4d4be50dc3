"""``peyvand register-user``: create an account straight in the database.

Uses the same services as the server (so the same username rules, password hashing and
conflict checks apply, and the appservices' exclusive namespaces are refused), over a
database connection of its own; the server may be running.
"""

from __future__ import annotations

from peyvand.app import open_database
from peyvand.cli.errors import CommandError
from peyvand.config.model import Config
from peyvand.errors import MatrixError
from peyvand.services.accounts.auth import AuthService
from peyvand.services.accounts.registration import RegistrationService
from peyvand.services.appservice.registration import RegistrationError
from peyvand.services.appservice.registry import AppServiceRegistry
from peyvand.storage.accounts import AccountStore
from peyvand.storage.guests import GuestStore
from peyvand.storage.migrations import run_migrations
from peyvand.storage.registration_tokens import RegistrationTokenStore
from peyvand.types import UserID


async def register_user(config: Config, localpart: str, password: str, *, admin: bool) -> UserID:
    """Register ``@localpart:server_name``; ``CommandError`` if it is taken or invalid."""
    db = await open_database(config.database)
    try:
        await run_migrations(db)
        accounts = AccountStore(db)
        auth = AuthService(config, accounts)
        try:
            appservices = AppServiceRegistry(config.app_service_config_files, config.server_name)
        except RegistrationError as exc:
            raise CommandError(str(exc)) from exc
        registration = RegistrationService(
            config, accounts, auth, RegistrationTokenStore(db), GuestStore(db), appservices
        )
        try:
            return await registration.register_user(localpart, password, admin)
        except MatrixError as exc:
            raise CommandError(f"cannot register {localpart!r}: {exc.message}") from exc
    finally:
        await db.close()
