"""The loaded application services, looked up by token, ID and namespace.

One registry per process, built from ``Config.app_service_config_files`` at start and
replaced whole by ``reload`` (SIGHUP): a reload that fails keeps the old set, so a typo
in one file never detaches every bridge. Lookups by token and ID are dict reads; those by
user or alias walk the (few) registrations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from peyvand.services.appservice.registration import ApplicationService, load_registrations
from peyvand.types import ServerName

__all__ = ["AppServiceRegistry"]

log = logging.getLogger(__name__)


class AppServiceRegistry:
    def __init__(
        self,
        paths: Sequence[Path],
        server_name: ServerName,
        services: Sequence[ApplicationService] | None = None,
    ) -> None:
        self._paths = tuple(paths)
        self._server_name = server_name
        self._by_token: dict[str, ApplicationService] = {}
        self._by_id: dict[str, ApplicationService] = {}
        # Told the new set after a reload (the transaction sender starts or stops queues).
        self.listeners: list[Callable[[Sequence[ApplicationService]], None]] = []
        self._install(
            load_registrations(self._paths, server_name) if services is None else services
        )

    def _install(self, services: Sequence[ApplicationService]) -> None:
        self._by_token = {s.as_token: s for s in services}
        self._by_id = {s.id: s for s in services}

    @property
    def services(self) -> Sequence[ApplicationService]:
        return tuple(self._by_id.values())

    def reload(self) -> None:
        """Read the registration files again; a ``RegistrationError`` leaves the old set."""
        services = load_registrations(self._paths, self._server_name)
        self._install(services)
        log.info("Loaded %d application service registrations", len(services))
        for listener in self.listeners:
            listener(services)

    def by_token(self, as_token: str, ip: str | None) -> ApplicationService | None:
        """The appservice whose ``as_token`` this is, if the request's address ``ip`` is
        one its ``ip_range_whitelist`` allows (otherwise the token is no appservice's)."""
        service = self._by_token.get(as_token)
        return service if service is not None and service.allows_ip(ip) else None

    def by_id(self, appservice_id: str) -> ApplicationService | None:
        return self._by_id.get(appservice_id)

    def exclusive_owners_of_user(self, user_id: str) -> list[ApplicationService]:
        """The appservices whose exclusive namespace (or bot) is ``user_id``: no one else
        may register it."""
        return [s for s in self._by_id.values() if s.is_exclusive_user(user_id)]

    def exclusive_owners_of_alias(self, alias: str) -> list[ApplicationService]:
        """The appservices whose exclusive alias namespace holds ``alias``: no one else may
        create or delete it."""
        return [s for s in self._by_id.values() if s.is_exclusive_alias(alias)]

    def owners_of_user(self, user_id: str) -> list[ApplicationService]:
        """Every appservice with ``user_id`` in a user namespace (to ask about unknown users)."""
        return [s for s in self._by_id.values() if s.is_user_in_namespace(user_id)]

    def owners_of_alias(self, alias: str) -> list[ApplicationService]:
        return [s for s in self._by_id.values() if s.is_alias_in_namespace(alias)]
