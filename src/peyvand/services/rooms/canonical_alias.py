"""The aliases a client puts in ``m.room.canonical_alias``.

Client-Server API, PUT /rooms/{roomId}/state/{eventType}/{stateKey}: "servers SHOULD
ensure that any new aliases being listed in the event are valid per their grammar/syntax
and that they point to the room ID where the state event is to be sent. Servers do not
validate aliases which are being removed or are already present in the state event."
A malformed alias is 400 ``M_INVALID_PARAM``, one that does not point to the room (or to
nothing) 400 ``M_BAD_ALIAS``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from peyvand.errors import Errcode, MatrixError
from peyvand.types import JsonDict, RoomAlias, RoomID, split_id

# The directory's GET /directory/room/{roomAlias}: {"room_id", "servers"}, or M_NOT_FOUND.
AliasLookup = Callable[[RoomAlias], Awaitable[JsonDict]]


async def check_canonical_alias(
    lookup: AliasLookup,
    room_id: RoomID,
    content: Mapping[str, Any],
    previous: Mapping[str, Any],
) -> None:
    """Check the aliases ``content`` adds to ``previous`` (the current event's content)."""
    new: list[RoomAlias] = []
    alias = content.get("alias")
    if alias is not None and alias != previous.get("alias"):
        new.append(_checked_syntax(alias))
    alt_aliases = content.get("alt_aliases")
    if alt_aliases is not None:
        if not isinstance(alt_aliases, list):
            raise MatrixError(Errcode.INVALID_PARAM, "'alt_aliases' must be a list")
        old_alt = previous.get("alt_aliases")
        known = {a for a in old_alt if isinstance(a, str)} if isinstance(old_alt, list) else set()
        new.extend(a for a in map(_checked_syntax, alt_aliases) if a not in known)
    for checked in dict.fromkeys(new):
        await _points_to(lookup, checked, room_id)


def check_new_room_aliases(content: Mapping[str, Any], pending_alias: RoomAlias | None) -> None:
    """Check the aliases of an ``m.room.canonical_alias`` in a new room's initial state:
    no alias can point to a room not created yet, except the one createRoom itself
    creates (``room_alias_name``), as Synapse creates it before the room's events."""
    aliases: list[object] = [] if content.get("alias") is None else [content["alias"]]
    alt_aliases = content.get("alt_aliases")
    if alt_aliases is not None:
        if not isinstance(alt_aliases, list):
            raise MatrixError(Errcode.INVALID_PARAM, "'alt_aliases' must be a list")
        aliases.extend(alt_aliases)
    for alias in map(_checked_syntax, aliases):
        if alias != pending_alias:
            raise MatrixError(
                Errcode.BAD_ALIAS, f"The alias '{alias}' does not point to this room."
            )


def _checked_syntax(alias: object) -> RoomAlias:
    if not isinstance(alias, str):
        raise MatrixError(Errcode.INVALID_PARAM, "Room aliases must be strings")
    try:
        split_id(alias, "#")
    except ValueError:
        raise MatrixError(Errcode.INVALID_PARAM, f"Invalid room alias: {alias}") from None
    return RoomAlias(alias)


async def _points_to(lookup: AliasLookup, alias: RoomAlias, room_id: RoomID) -> None:
    try:
        found = await lookup(alias)
    except MatrixError as exc:
        if exc.errcode != Errcode.NOT_FOUND:
            raise
        found = {}
    if found.get("room_id") != room_id:
        raise MatrixError(Errcode.BAD_ALIAS, f"The alias '{alias}' does not point to this room.")
