"""Leaf types shared by every layer: Matrix identifiers and JSON aliases.

Identifier grammar: Matrix spec, Appendices, "Common Identifier Format".
"""

from __future__ import annotations

import re
from typing import Any, NewType

JsonDict = dict[str, Any]

UserID = NewType("UserID", str)
RoomID = NewType("RoomID", str)
EventID = NewType("EventID", str)
RoomAlias = NewType("RoomAlias", str)
ServerName = NewType("ServerName", str)
DeviceID = NewType("DeviceID", str)

# Appendices, "Server Name": hostname, IPv4 or [IPv6], optional port.
_SERVER_NAME_RE = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]{2,45}\]|[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[A-Za-z0-9\-.]{1,255})(?::[0-9]{1,5})?$"
)
# Appendices, "User Identifiers": historical grammar is accepted for other servers' users.
# Matched with fullmatch: ``$`` alone would also accept a trailing newline.
_LOCALPART_RE = re.compile(r"^[a-z0-9._=\-/+]+$")
_HISTORICAL_LOCALPART_RE = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")


def is_valid_server_name(name: str) -> bool:
    return bool(_SERVER_NAME_RE.fullmatch(name))


def split_id(identifier: str, sigil: str) -> tuple[str, str]:
    """Split `<sigil>localpart:domain` into (localpart, domain); ValueError if malformed."""
    if len(identifier) < 3 or identifier[0] != sigil or ":" not in identifier:
        raise ValueError(f"not a valid {sigil} identifier: {identifier!r}")
    localpart, _, domain = identifier[1:].partition(":")
    if not is_valid_server_name(domain):
        raise ValueError(f"invalid server name in {identifier!r}")
    return localpart, domain


def is_valid_user_id(user_id: str, *, historical: bool = True) -> bool:
    """True if `user_id` matches the user ID grammar (at most 255 bytes)."""
    if len(user_id.encode()) > 255:
        return False
    try:
        localpart, _ = split_id(user_id, "@")
    except ValueError:
        return False
    pattern = _HISTORICAL_LOCALPART_RE if historical else _LOCALPART_RE
    return bool(localpart) and bool(pattern.fullmatch(localpart))


def is_valid_localpart(localpart: str) -> bool:
    """Localpart grammar for new local users (Appendices, "User Identifiers")."""
    return bool(_LOCALPART_RE.fullmatch(localpart))


def server_name_of(identifier: str) -> ServerName:
    """The domain of a user, room alias or (pre-v12) room ID; '' if there is none."""
    _, sep, domain = identifier.partition(":")
    return ServerName(domain if sep else "")
