"""The ``extensions`` object of a simplified sliding sync request (MSC4186, "Extensions").

Each extension is asked for with an object carrying ``enabled`` (false by default; an
extension absent, null or not enabled gives nothing); unknown extension names are ignored
("If a client sends an unknown extension name, the server MUST ignore it"). Checked as
Synapse 1.163's request models check it (``synapse/types/rest/client/__init__.py``): a
value of the wrong JSON type is 400 ``M_BAD_JSON``, a value of the right type that cannot
be used is 400 ``M_INVALID_PARAM``.

The room extensions (``account_data``, ``receipts``, ``typing``) are scoped by ``lists``
(list names, ``*`` for every list) and ``rooms`` (room subscriptions, ``*`` for every
one); both default to ``["*"]`` and null means none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from peyvand.errors import bad_json, invalid_param
from peyvand.services.sync.streams import parse_position_number
from peyvand.types import RoomID

WILDCARD = "*"
# MSC3885: "limit: maximum number of to-device messages to return"; Synapse sends at most
# 100 whatever the client asks.
TO_DEVICE_DEFAULT_LIMIT = 100
TO_DEVICE_MAX_LIMIT = 100
_ALL: tuple[str, ...] = (WILDCARD,)


@dataclass(frozen=True, slots=True)
class RoomScope:
    """Which rooms of the response a room extension covers (MSC3959 / MSC3960 / MSC3961,
    as Synapse's ``find_relevant_room_ids_for_extension``)."""

    lists: tuple[str, ...] | None = _ALL
    rooms: tuple[str, ...] | None = _ALL

    def select(
        self, lists: Mapping[str, Sequence[RoomID]], subscriptions: Sequence[RoomID]
    ) -> set[RoomID]:
        """The rooms of the named lists' windows and of the named subscriptions."""
        selected: set[RoomID] = set()
        if self.rooms is not None:
            if WILDCARD in self.rooms:
                selected.update(subscriptions)
            else:
                subscribed = set(subscriptions)
                selected.update(RoomID(r) for r in self.rooms if r in subscribed)
        if self.lists is not None:
            names = lists.keys() if WILDCARD in self.lists else self.lists
            for name in names:
                selected.update(lists.get(name, ()))
        return selected


@dataclass(frozen=True, slots=True)
class ToDeviceRequest:
    """MSC3885: ``since`` is the ``next_batch`` the client last received (None: from the
    start of the device's inbox); ``limit`` at most ``TO_DEVICE_MAX_LIMIT``."""

    since: int | None = None
    limit: int = TO_DEVICE_DEFAULT_LIMIT


@dataclass(frozen=True, slots=True)
class ExtensionsRequest:
    """The enabled extensions; None (or False) for one not asked for."""

    to_device: ToDeviceRequest | None = None
    e2ee: bool = False
    account_data: RoomScope | None = None
    receipts: RoomScope | None = None
    typing: RoomScope | None = None

    def any_enabled(self) -> bool:
        return bool(
            self.to_device or self.e2ee or self.account_data or self.receipts or self.typing
        )


def parse_extensions(body: Mapping[str, object]) -> ExtensionsRequest:
    """Check the request's ``extensions`` object and keep what is enabled."""
    to_device = _enabled_object(body, "to_device")
    account_data = _enabled_object(body, "account_data")
    receipts = _enabled_object(body, "receipts")
    typing = _enabled_object(body, "typing")
    return ExtensionsRequest(
        to_device=_to_device(to_device) if to_device is not None else None,
        e2ee=_enabled_object(body, "e2ee") is not None,
        account_data=_scope(account_data, "account_data") if account_data is not None else None,
        receipts=_scope(receipts, "receipts") if receipts is not None else None,
        typing=_scope(typing, "typing") if typing is not None else None,
    )


def _enabled_object(body: Mapping[str, object], name: str) -> Mapping[str, object] | None:
    """The extension's object if it is there and ``enabled`` is true."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_json(f"'extensions.{name}' must be an object")
    enabled = value.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise bad_json(f"'extensions.{name}.enabled' must be a boolean")
    return value if enabled else None


def _to_device(value: Mapping[str, object]) -> ToDeviceRequest:
    since = value.get("since")
    limit = value.get("limit", TO_DEVICE_DEFAULT_LIMIT)
    if since is not None and not isinstance(since, str):
        raise bad_json("'extensions.to_device.since' must be a string")
    # bool is an int in Python, not in JSON.
    if not isinstance(limit, int) or isinstance(limit, bool):
        raise bad_json("'extensions.to_device.limit' must be an integer")
    if limit < 1:
        # Synapse would answer a limit of 0 with an empty page whose next_batch skips
        # (and, once acknowledged, deletes) every waiting message.
        raise invalid_param("'extensions.to_device.limit' must be positive")
    position: int | None = None
    if since is not None:
        try:
            position = parse_position_number(since)
        except ValueError:
            raise invalid_param(
                "'extensions.to_device.since' is invalid (should look like an int)"
            ) from None
    return ToDeviceRequest(since=position, limit=min(limit, TO_DEVICE_MAX_LIMIT))


def _scope(value: Mapping[str, object], name: str) -> RoomScope:
    return RoomScope(
        lists=_names(value, "lists", name),
        rooms=_names(value, "rooms", name),
    )


def _names(value: Mapping[str, object], key: str, name: str) -> tuple[str, ...] | None:
    """``lists`` or ``rooms``: absent is ``["*"]``, null is none."""
    if key not in value:
        return _ALL
    names = value[key]
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise bad_json(f"'extensions.{name}.{key}' must be an array of strings")
    return tuple(names)
