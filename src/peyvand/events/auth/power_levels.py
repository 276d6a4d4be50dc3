"""Power levels: who has which level, and what each action requires.

Defaults come from the ``m.room.power_levels`` schema (Client-Server API, "m.room.power_levels"):
``users_default``, ``events_default`` and ``invite`` default to 0; ``state_default``,
``kick``, ``ban`` and ``redact`` to 50, whether or not the room has a power levels event.
Without a power levels event the room creator has level 100 and everyone else 0 (v10, v11);
from v12 room creators have an infinitely high level, always ("Room Version 12",
"Authorization rules").

Before v10 a level may also be a string holding an integer (rooms v1
"``m.room.power_levels`` events accept values as strings") and, before v6, a float,
truncated (rooms v1 "... accept values as floats"); ``as_level`` reads every form. From v10
the authorization rules admit only integers, so reading the other forms leniently changes
nothing there.

These helpers are shared by the authorization rules and the service layer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Final

from peyvand.events.auth.errors import reject
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.room_versions import RoomVersion
from peyvand.types import is_valid_user_id

CREATE_KEY: StateKey = ("m.room.create", "")
POWER_LEVELS_KEY: StateKey = ("m.room.power_levels", "")

# The top-level levels and their schema defaults.
NAMED_LEVEL_DEFAULTS: Mapping[str, int] = {
    "users_default": 0,
    "events_default": 0,
    "state_default": 50,
    "ban": 50,
    "kick": 50,
    "redact": 50,
    "invite": 0,
}

# The power level of a user without a power levels event in v10/v11 rooms, if they created it.
CREATOR_LEVEL_WITHOUT_POWER_LEVELS = 100


# Rooms v1 "accept values as strings": base 10, optional sign and leading zeroes, and any
# leading or trailing whitespace.
_STRINGY_LEVEL_RE: Final = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)


def is_int(value: Any) -> bool:
    """True for a JSON integer (``bool`` is not one)."""
    return type(value) is int


def as_level(value: Any) -> int | None:
    """A power level value as an integer: an integer, a string holding one (before v10)
    or a finite float, truncated (before v6); None for anything else."""
    if type(value) is int:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str) and _STRINGY_LEVEL_RE.fullmatch(value):
        return int(value)
    return None


def room_creators(create_event: Pdu) -> set[str]:
    """The room creators named by ``create_event``.

    Before v11, ``content.creator``; from v11, the ``sender`` ("Room Version 11",
    "Remove the creator property"); from v12 also every entry of
    ``content.additional_creators`` ("Room Version 12", "Client considerations").
    """
    version = create_event.room_version
    if not version.implicit_room_creator:
        creator = create_event.content.get("creator")
        return {creator} if isinstance(creator, str) else set()
    creators: set[str] = {create_event.sender}
    if version.creators_have_infinite_power:
        additional = create_event.content.get("additional_creators", [])
        if isinstance(additional, list):
            creators.update(user for user in additional if isinstance(user, str))
    return creators


def get_named_level(
    power_levels_content: Mapping[str, Any] | None, name: str, default: int | None = None
) -> int:
    """The level ``name`` (``invite``, ``kick``, ``ban``, ``redact``, ``state_default``, ...).

    ``power_levels_content`` is the content of the room's power levels event, or None if
    it has none. ``default`` overrides the schema default listed in ``NAMED_LEVEL_DEFAULTS``.
    """
    if default is None:
        default = NAMED_LEVEL_DEFAULTS.get(name, 0)
    if power_levels_content is None:
        return default
    level = as_level(power_levels_content.get(name))
    return default if level is None else level


def get_send_level(
    event_type: str, state_key: str | None, power_levels_content: Mapping[str, Any] | None
) -> int:
    """The *required power level* to send an event of ``event_type``.

    ``events[event_type]`` if set, else ``state_default`` for state events (``state_key``
    not None) and ``events_default`` for the others.
    """
    events = (power_levels_content or {}).get("events")
    if isinstance(events, Mapping) and (level := as_level(events.get(event_type))) is not None:
        return level
    name = "state_default" if state_key is not None else "events_default"
    return get_named_level(power_levels_content, name)


def get_user_power_level(
    user_id: str, auth_state: Mapping[StateKey, Pdu], room_version: RoomVersion
) -> int | float:
    """The power level of ``user_id`` in the room whose state is ``auth_state``.

    ``math.inf`` for a v12 room creator; otherwise ``users[user_id]``, else
    ``users_default``; with no power levels event, 100 for the room creator before v12
    and 0 for everyone else.
    """
    create_event = auth_state.get(CREATE_KEY)
    creators = room_creators(create_event) if create_event is not None else set()
    if room_version.creators_have_infinite_power and user_id in creators:
        return math.inf
    power_levels = auth_state.get(POWER_LEVELS_KEY)
    if power_levels is None:
        return CREATOR_LEVEL_WITHOUT_POWER_LEVELS if user_id in creators else 0
    users = power_levels.content.get("users")
    if isinstance(users, Mapping) and (level := as_level(users.get(user_id))) is not None:
        return level
    return get_named_level(power_levels.content, "users_default")


def check_power_levels_event(
    event: Pdu, auth_state: Mapping[StateKey, Pdu], sender_level: int | float
) -> None:
    """Rule 10 (v12 numbering; rule 9 in v10/v11): an ``m.room.power_levels`` event.

    Raises ``AuthError`` if the content is malformed or changes a level the sender may
    not change; returns if the event is allowed.
    """
    version = event.room_version
    content = event.content
    if version.enforce_int_power_levels:
        # 10.1 If any of the properties users_default, events_default, state_default, ban,
        # redact, kick, or invite in content are present and not an integer, reject.
        for name in NAMED_LEVEL_DEFAULTS:
            if name in content and not is_int(content[name]):
                raise reject(version, "10.1", f"{name} must be an integer")
        # 10.2 If either of the properties events or notifications in content are present
        # and not an object with values that are integers, reject.
        for name in ("events", "notifications"):
            if name in content and not _is_int_map(content[name]):
                raise reject(version, "10.2", f"{name} must map to integers")
    # 10.3 If the users property in content is not an object with keys that are valid user
    # IDs with values that are integers (before v10: or a string that is an integer),
    # reject. (An absent `users` is an empty object.)
    users = content.get("users", {})
    valid_values = (
        _is_int_map(users)
        if version.enforce_int_power_levels
        else isinstance(users, Mapping) and all(as_level(v) is not None for v in users.values())
    )
    if not valid_values or not all(is_valid_user_id(user) for user in users):
        raise reject(version, "10.3", "users must map valid user IDs to integers")
    create_event = auth_state.get(CREATE_KEY)
    if version.creators_have_infinite_power and create_event is not None:
        # 10.4 If the users property in content contains the sender of the m.room.create
        # event or any of the additional_creators array (if present) from the content of
        # the m.room.create event, reject.
        listed = room_creators(create_event).intersection(users)
        if listed:
            raise reject(version, "10.4", f"room creators may not be listed: {sorted(listed)}")
    # 10.5 If there is no previous m.room.power_levels event in the room, allow.
    previous = auth_state.get(POWER_LEVELS_KEY)
    if previous is None:
        return
    old = previous.content
    # 10.6 For the properties users_default, events_default, state_default, ban, redact,
    # kick, invite check if they were added, changed or removed. For each alteration:
    for name in NAMED_LEVEL_DEFAULTS:
        old_value, new_value = _level(old, name), _level(content, name)
        if old_value == new_value:
            continue
        # 10.6.1 If the current value is higher than the sender's current power level, reject.
        if old_value is not None and old_value > sender_level:
            raise reject(version, "10.6.1", f"cannot change {name} from above own level")
        # 10.6.2 If the new value is higher than the sender's current power level, reject.
        if new_value is not None and new_value > sender_level:
            raise reject(version, "10.6.2", f"cannot set {name} above own level")
    maps = ("events", "notifications") if version.limit_notifications_power_levels else ("events",)
    for name in maps:
        old_map, new_map = _int_map(old, name), _int_map(content, name)
        for key in old_map.keys() | new_map.keys():
            old_value, new_value = old_map.get(key), new_map.get(key)
            if old_value == new_value:
                continue
            # 10.7 For each entry being changed in, or removed from, the events or
            # notifications properties:
            # 10.7.1 If the current value is greater than the sender's current power
            # level, reject.
            if old_value is not None and old_value > sender_level:
                raise reject(version, "10.7.1", f"cannot change {name}[{key!r}] from above own")
            # 10.8 For each entry being added to, or changed in, the events or
            # notifications properties:
            # 10.8.1 If the new value is greater than the sender's current power level,
            # reject.
            if new_value is not None and new_value > sender_level:
                raise reject(version, "10.8.1", f"cannot set {name}[{key!r}] above own level")
    old_users, new_users = _int_map(old, "users"), _int_map(content, "users")
    for user in old_users.keys() | new_users.keys():
        old_value, new_value = old_users.get(user), new_users.get(user)
        if old_value == new_value:
            continue
        # 10.9 For each entry being changed in, or removed from, the users property, other
        # than the sender's own entry:
        # 10.9.1 If the current value is greater than or equal to the sender's current
        # power level, reject.
        if user != event.sender and old_value is not None and old_value >= sender_level:
            raise reject(version, "10.9.1", f"cannot change the level of {user}")
        # 10.10 For each entry being added to, or changed in, the users property:
        # 10.10.1 If the new value is greater than the sender's current power level, reject.
        if new_value is not None and new_value > sender_level:
            raise reject(version, "10.10.1", f"cannot raise {user} above own level")
    # 10.10 (sic, the spec numbers it twice) Otherwise, allow.


def _is_int_map(value: Any) -> bool:
    return isinstance(value, Mapping) and all(is_int(v) for v in value.values())


def _level(content: Mapping[str, Any], name: str) -> int | None:
    return as_level(content.get(name))


def _int_map(content: Mapping[str, Any], name: str) -> dict[str, int]:
    value = content.get(name)
    if not isinstance(value, Mapping):
        return {}
    return {k: level for k, v in value.items() if (level := as_level(v)) is not None}
