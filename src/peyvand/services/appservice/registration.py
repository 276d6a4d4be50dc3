"""Application service registrations (Application Service API, "Registration").

An operator installs a bridge or a bot by listing its registration file, a YAML mapping
the appservice generates: its ``id``, ``url``, the two tokens (``as_token`` the
appservice presents to us, ``hs_token`` we present to it), its bot's ``sender_localpart``
and the ``namespaces`` of users, room aliases and room IDs it claims, each a list of
``{exclusive, regex}``. Parsing is strict: a bad file is a ``RegistrationError`` naming
the file and the field, raised at start (or on a reload, which then keeps the old set).

Optional fields: ``rate_limited`` (default true), ``protocols`` (third-party network
IDs), ``receive_ephemeral`` or its MSC2409 name ``de.sorunome.msc2409.push_ephemeral``
(typing, receipts, presence and to-device messages in transactions),
``org.matrix.msc3202`` (device lists, one-time-key counts and ``device_id``
masquerading, so a bridge can encrypt), ``io.element.msc4190`` (the appservice manages
its users' devices itself) and ``ip_range_whitelist`` (the addresses its ``as_token`` is
accepted from, as Synapse's). Where Synapse is lenient with what bridges generate, so is
this: an unknown namespace kind is ignored (logged), ``rate_limited: null`` is the default.

PyYAML is imported when the first file is read, not with this module: about 1.6 MiB a
server without appservices never needs (issue 15, memory).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from peyvand.netguard import IPNetwork, in_networks, peer_address
from peyvand.types import ServerName, UserID

__all__ = [
    "ApplicationService",
    "Namespace",
    "RegistrationError",
    "load_registrations",
    "parse_registration",
]

log = logging.getLogger(__name__)

_NAMESPACE_KINDS: Final = ("users", "aliases", "rooms")
# User ID localparts (Appendices, "User Identifiers"), historical characters allowed.
_LOCALPART: Final = re.compile(r"[\x21-\x39\x3b-\x7e]{1,255}")


class RegistrationError(ValueError):
    """A registration file that cannot be used; the message names the file and field."""


@dataclass(frozen=True, slots=True)
class Namespace:
    exclusive: bool
    regex: str
    pattern: re.Pattern[str]

    def matches(self, value: str) -> bool:
        """Whether ``value`` matches from its start, as Synapse tests namespaces: a regex
        without the server part (``@irc_[0-9]+``) still claims ``@irc_5:example.org``, so
        an exclusive one written so protects what its author meant (bridges generate
        regexes anchored on both ends by convention, ``@irc_.*:example\\.org``)."""
        return self.pattern.match(value) is not None


@dataclass(frozen=True, slots=True)
class ApplicationService:
    id: str
    url: str | None
    as_token: str
    hs_token: str
    sender: UserID
    users: tuple[Namespace, ...]
    aliases: tuple[Namespace, ...]
    rooms: tuple[Namespace, ...]
    rate_limited: bool = True
    protocols: tuple[str, ...] = ()
    receive_ephemeral: bool = False
    msc3202: bool = False
    msc4190: bool = False
    ip_range_whitelist: tuple[IPNetwork, ...] = ()
    source: Path | None = None

    def allows_ip(self, ip: str | None) -> bool:
        """Whether a request from ``ip`` may use the ``as_token`` (any address unless the
        registration lists ``ip_range_whitelist``)."""
        if not self.ip_range_whitelist:
            return True
        address = peer_address(ip)
        return address is not None and in_networks(address, self.ip_range_whitelist)

    def is_user_in_namespace(self, user_id: str) -> bool:
        """The appservice's bot or a user its ``users`` namespaces claim: a user it may
        act as (``?user_id=``) and register."""
        return user_id == self.sender or any(ns.matches(user_id) for ns in self.users)

    def is_exclusive_user(self, user_id: str) -> bool:
        return user_id == self.sender or any(
            ns.exclusive and ns.matches(user_id) for ns in self.users
        )

    def is_alias_in_namespace(self, alias: str) -> bool:
        return any(ns.matches(alias) for ns in self.aliases)

    def is_exclusive_alias(self, alias: str) -> bool:
        return any(ns.exclusive and ns.matches(alias) for ns in self.aliases)

    def is_room_in_namespace(self, room_id: str) -> bool:
        return any(ns.matches(room_id) for ns in self.rooms)


def _field(info: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in info:
        raise RegistrationError(f"{where}: '{name}' is required")
    return info[name]


def _string(info: Mapping[str, Any], name: str, where: str) -> str:
    value = _field(info, name, where)
    if not isinstance(value, str) or not value:
        raise RegistrationError(f"{where}: '{name}' must be a non-empty string")
    return value


def _flag(info: Mapping[str, Any], names: Iterable[str], where: str) -> bool:
    result = False
    for name in names:
        value = info.get(name, False)
        if not isinstance(value, bool):
            raise RegistrationError(f"{where}: '{name}' must be true or false")
        result = result or value
    return result


def _namespaces(info: Mapping[str, Any], kind: str, where: str) -> tuple[Namespace, ...]:
    entries = info.get(kind, [])
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise RegistrationError(f"{where}: 'namespaces.{kind}' must be a list")
    result = []
    for index, entry in enumerate(entries):
        at = f"{where}: 'namespaces.{kind}[{index}]'"
        if not isinstance(entry, dict):
            raise RegistrationError(f"{at} must be a mapping with 'exclusive' and 'regex'")
        regex, exclusive = entry.get("regex"), entry.get("exclusive")
        if not isinstance(regex, str) or not regex:
            raise RegistrationError(f"{at}.regex must be a non-empty string")
        if not isinstance(exclusive, bool):
            raise RegistrationError(f"{at}.exclusive must be true or false")
        try:
            pattern = re.compile(regex)
        except re.error as e:
            raise RegistrationError(f"{at}.regex is not a valid regular expression: {e}") from e
        result.append(Namespace(exclusive, regex, pattern))
    return tuple(result)


def parse_registration(
    info: object, server_name: ServerName, source: Path | None = None
) -> ApplicationService:
    """One registration mapping, checked field by field."""
    where = str(source) if source is not None else "registration"
    if not isinstance(info, dict):
        raise RegistrationError(f"{where}: a registration is a YAML mapping")
    url = _field(info, "url", where)
    if url is not None and (
        not isinstance(url, str) or not url.startswith(("http://", "https://"))
    ):
        raise RegistrationError(f"{where}: 'url' must be an http(s) URL or null")
    localpart = _string(info, "sender_localpart", where)
    if not _LOCALPART.fullmatch(localpart):
        raise RegistrationError(f"{where}: 'sender_localpart' is not a valid user localpart")
    namespaces = info.get("namespaces")
    if not isinstance(namespaces, dict):
        raise RegistrationError(f"{where}: 'namespaces' must be a mapping")
    unknown = set(namespaces) - set(_NAMESPACE_KINDS)
    if unknown:
        log.warning("%s: unknown namespaces %s ignored", where, sorted(unknown))
    rate_limited = info.get("rate_limited")
    if rate_limited is None:
        rate_limited = True
    if not isinstance(rate_limited, bool):
        raise RegistrationError(f"{where}: 'rate_limited' must be true or false")
    protocols = info.get("protocols") or []
    if not isinstance(protocols, list) or not all(isinstance(p, str) and p for p in protocols):
        raise RegistrationError(f"{where}: 'protocols' must be a list of strings")
    return ApplicationService(
        id=_string(info, "id", where),
        url=url,
        as_token=_string(info, "as_token", where),
        hs_token=_string(info, "hs_token", where),
        sender=UserID(f"@{localpart}:{server_name}"),
        users=_namespaces(namespaces, "users", where),
        aliases=_namespaces(namespaces, "aliases", where),
        rooms=_namespaces(namespaces, "rooms", where),
        rate_limited=rate_limited,
        protocols=tuple(protocols),
        receive_ephemeral=_flag(
            info, ("receive_ephemeral", "de.sorunome.msc2409.push_ephemeral"), where
        ),
        msc3202=_flag(info, ("org.matrix.msc3202",), where),
        msc4190=_flag(info, ("io.element.msc4190",), where),
        ip_range_whitelist=_networks(info.get("ip_range_whitelist"), where),
        source=source,
    )


def _networks(value: object, where: str) -> tuple[IPNetwork, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RegistrationError(f"{where}: 'ip_range_whitelist' must be a list of CIDR ranges")
    try:
        return tuple(ipaddress.ip_network(v, strict=False) for v in value)
    except ValueError as e:
        raise RegistrationError(f"{where}: 'ip_range_whitelist': {e}") from e


def _check_distinct(services: list[ApplicationService]) -> None:
    """Two registrations may not share an ID, a token or a bot, and no exclusive namespace
    may claim another appservice's bot or repeat another's exclusive regex: whichever
    the server picked, one of the two bridges would silently lose its users."""
    seen: dict[str, str] = {}
    for service in services:
        for label, value in (
            ("id", service.id),
            ("as_token", service.as_token),
            ("hs_token", service.hs_token),
            ("sender_localpart", service.sender),
        ):
            key = f"{label}\x00{value}"
            if key in seen:
                raise RegistrationError(
                    f"{service.source}: '{label}' is the same as in {seen[key]}"
                )
            seen[key] = str(service.source)
        if service.as_token == service.hs_token:
            raise RegistrationError(f"{service.source}: 'as_token' and 'hs_token' must differ")
    for service in services:
        for other in services:
            if other is service:
                continue
            if other.is_exclusive_user(service.sender):
                raise RegistrationError(
                    f"{other.source}: an exclusive user namespace claims the bot "
                    f"{service.sender} of {service.source}"
                )
            for kind in _NAMESPACE_KINDS:
                mine = {ns.regex for ns in getattr(service, kind) if ns.exclusive}
                overlap = mine & {ns.regex for ns in getattr(other, kind) if ns.exclusive}
                if overlap:
                    raise RegistrationError(
                        f"{service.source} and {other.source} both claim the exclusive "
                        f"{kind} namespace {sorted(overlap)[0]!r}"
                    )


def load_registrations(
    paths: Iterable[Path], server_name: ServerName
) -> tuple[ApplicationService, ...]:
    """Read and check every registration file; any problem is one ``RegistrationError``."""
    services = []
    for path in paths:
        import yaml

        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise RegistrationError(f"{path}: cannot be read: {e.strerror}") from e
        try:
            info = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise RegistrationError(f"{path}: not valid YAML: {e}") from e
        services.append(parse_registration(info, server_name, path))
    _check_distinct(services)
    return tuple(services)
