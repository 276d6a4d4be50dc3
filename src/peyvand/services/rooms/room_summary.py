"""Room previews (MSC3266): the summary of a room a user may be about to join
(Client-Server API ``GET /_matrix/client/v1/room_summary/{roomIdOrAlias}``) and the
federation ``GET /_matrix/federation/v1/hierarchy/{roomId}`` that carries it between
servers, as Synapse's ``RoomSummaryHandler`` does them.

Who may see a summary ("room_summary", Synapse's ``_is_local_room_accessible``): anyone,
even unauthenticated, when the join rule is ``public`` (or ``knock`` /
``knock_restricted`` where the room version has it) or the history is
``world_readable``; a user who is joined or invited; a user joined to a room that the
``restricted`` join rule allows. A server: the same public conditions, or one of its
users is joined or invited, or is joined to an allowed room.

A room this server is not in is summarised by asking the ``via`` servers for its
hierarchy, then filtered for the user the same way with what the answer says. Spaces
proper (children summaries) are left to a later issue: the hierarchy served here names
the room's ``m.space.child`` events and no children.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from peyvand.errors import Errcode, MatrixError
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.room_versions import RoomVersion
from peyvand.lru import LRU
from peyvand.services.federation.room_access import RoomAccess
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.types import JsonDict, RoomAlias, RoomID, ServerName, UserID, server_name_of

logger = logging.getLogger(__name__)

_CREATE: Final[StateKey] = ("m.room.create", "")
_JOIN_RULES: Final[StateKey] = ("m.room.join_rules", "")
_SUMMARY_KEYS: Final[tuple[StateKey, ...]] = (
    _CREATE,
    _JOIN_RULES,
    ("m.room.name", ""),
    ("m.room.topic", ""),
    ("m.room.avatar", ""),
    ("m.room.canonical_alias", ""),
    ("m.room.history_visibility", ""),
    ("m.room.guest_access", ""),
    ("m.room.encryption", ""),
)
# Servers asked for a room this server is not in (each for at most _ASK_SECONDS), and
# m.space.child events served.
_MAX_VIA: Final = 5
_ASK_SECONDS: Final = 10.0
_MAX_CHILDREN: Final = 50
# The string fields of a summary and its integer and boolean ones (room_summary.yaml,
# public_rooms_chunk.yaml): what a remote answer may carry to the client.
_STRING_FIELDS: Final = (
    "name",
    "topic",
    "canonical_alias",
    "avatar_url",
    "join_rule",
    "room_type",
    "encryption",
    "room_version",
)
_BOOL_FIELDS: Final = ("world_readable", "guest_can_join")

AliasLookup = Callable[[RoomAlias], Awaitable[JsonDict]]
"""alias -> ``{"room_id", "servers"}`` (``DirectoryService.get_alias``; 404 if unknown)."""


class RemoteHierarchy(Protocol):
    async def get_hierarchy(
        self, destination: ServerName, room_id: RoomID, *, suggested_only: bool
    ) -> Any: ...


class RoomSummaryService:
    def __init__(
        self,
        server_name: ServerName,
        state: StateService,
        index: RoomIndex,
        get_alias: AliasLookup,
        *,
        remote: RemoteHierarchy | None,
        allows: Callable[[ServerName], bool],
        access: RoomAccess,
    ) -> None:
        """``remote`` asks other servers (None: federation is off), those ``allows``
        lets through; ``access`` checks servers asking this one."""
        self._server_name = server_name
        self._state = state
        self._index = index
        self._get_alias = get_alias
        self._remote = remote
        self._allows = allows
        self._access = access
        # (room, state group, redactions seen) -> its summary: a state group never changes.
        self._entries: LRU[tuple[RoomID, int, int], JsonDict] = LRU(1024)

    # -- GET /room_summary -------------------------------------------------------------

    async def summary(
        self, user_id: UserID | None, room_id_or_alias: str, via: Sequence[str]
    ) -> JsonDict:
        """The summary of a room or alias for ``user_id`` (None: unauthenticated), with
        their ``membership``; 404 when unknown or not theirs to see."""
        servers = list(via)
        if room_id_or_alias.startswith("#"):
            resolved = await self._get_alias(RoomAlias(room_id_or_alias))
            room_id = RoomID(resolved["room_id"])
            servers += [s for s in resolved.get("servers", []) if s not in servers]
        elif room_id_or_alias.startswith("!"):
            room_id = RoomID(room_id_or_alias)
        else:
            raise MatrixError(Errcode.INVALID_PARAM, "Expected a room ID or a room alias")
        snapshot = await self._state.get_room(room_id)
        if snapshot is not None and snapshot.takes_part(self._server_name):
            state = await self._summary_state(snapshot)
            if not await self._user_may_see(snapshot, state, user_id):
                raise MatrixError(Errcode.NOT_FOUND, "Room not found or is not accessible")
            summary = dict(self._entry(snapshot, state))
        else:
            summary = await self._remote_summary(user_id, room_id, servers)
        if user_id is not None:
            summary["membership"] = await self._membership(user_id, room_id)
        return summary

    async def _membership(self, user_id: UserID, room_id: RoomID) -> str:
        """The user's newest membership known here, an invite over federation to a room
        this server is not (or no longer) in included; ``leave`` when none."""
        found = (await self._index.memberships(user_id)).get(room_id)
        return found[0] if found is not None else "leave"

    async def _remote_summary(
        self, user_id: UserID | None, room_id: RoomID, via: Sequence[str]
    ) -> JsonDict:
        if not via:
            raise MatrixError(Errcode.MISSING_PARAM, "Missing 'via' to ask about a remote room")
        room = await self._ask_hierarchy(room_id, via)
        if room is None or not await self._user_may_see_remote(user_id, room_id, room):
            raise MatrixError(Errcode.NOT_FOUND, "Room not found or is not accessible")
        return room

    async def _ask_hierarchy(self, room_id: RoomID, via: Sequence[str]) -> JsonDict | None:
        """The room's summary from the first of ``via`` that gives a well-formed one."""
        if self._remote is None:
            return None
        servers = [ServerName(s) for s in via if s != self._server_name]
        for server in [s for s in servers if self._allows(s)][:_MAX_VIA]:
            try:
                async with asyncio.timeout(_ASK_SECONDS):
                    answer = await self._remote.get_hierarchy(server, room_id, suggested_only=True)
            except Exception as exc:
                logger.info("hierarchy of %s from %s failed: %s", room_id, server, exc)
                continue
            room = answer.get("room") if isinstance(answer, dict) else None
            summary = _checked_remote_summary(room, room_id)
            if summary is not None:
                return summary
        return None

    async def _user_may_see_remote(
        self, user_id: UserID | None, room_id: RoomID, room: JsonDict
    ) -> bool:
        """Synapse's ``_is_remote_room_accessible``: the answer's public conditions
        (the version is unknown, so ``knock`` counts), else the user's own memberships
        here: in an allowed room, or invited."""
        if room.get("join_rule", "public") in ("public", "knock", "knock_restricted"):
            return True
        if room.get("world_readable") is True:
            return True
        if user_id is None:
            return False
        memberships = await self._index.memberships(user_id)
        allowed = room.get("allowed_room_ids", [])
        if any(memberships.get(r, ("",))[0] == "join" for r in allowed):
            return True
        found = memberships.get(room_id)
        return found is not None and found[0] in ("join", "invite")

    # -- GET /_matrix/federation/v1/hierarchy ------------------------------------------

    async def hierarchy(
        self, origin: ServerName, room_id: RoomID, suggested_only: bool
    ) -> JsonDict:
        """The room's summary for ``origin`` with its ``m.space.child`` events (only the
        suggested ones with ``suggested_only``); 404 when this server is not in the room
        or ``origin`` may not see it."""
        snapshot = await self._access.room(room_id, origin)
        if not snapshot.takes_part(self._server_name):
            raise MatrixError(Errcode.NOT_FOUND, f"Unknown room: {room_id}")
        state = await self._summary_state(snapshot)
        if not await self._server_may_see(snapshot, state, origin):
            raise MatrixError(Errcode.NOT_FOUND, f"Unknown room: {room_id}")
        room = dict(self._entry(snapshot, state))
        room["children_state"] = await self._children_state(snapshot, suggested_only)
        return {"room": room, "children": [], "inaccessible_children": []}

    async def _children_state(self, snapshot: RoomSnapshot, suggested_only: bool) -> list[JsonDict]:
        """The room's ``m.space.child`` events with a valid ``via``, stripped, with their
        ``origin_server_ts``, ordered as Synapse orders them (``order``, then timestamp,
        then room ID)."""
        keys = [k for k in snapshot.state if k[0] == "m.space.child"]
        events = await self._state.get_state_events(snapshot.state, keys)
        children = [
            e
            for e in events.values()
            if _valid_via(e.content.get("via"))
            and (not suggested_only or e.content.get("suggested") is True)
        ]
        children.sort(key=_child_order)
        return [
            {
                "type": e.type,
                "state_key": e.state_key,
                "content": e.content,
                "sender": e.sender,
                "origin_server_ts": e.origin_server_ts,
            }
            for e in children[:_MAX_CHILDREN]
        ]

    # -- who may see it ----------------------------------------------------------------

    async def _summary_state(self, snapshot: RoomSnapshot) -> dict[StateKey, Pdu]:
        return await self._state.get_state_events(snapshot.state, _SUMMARY_KEYS)

    @staticmethod
    def _open_to_all(snapshot: RoomSnapshot, state: Mapping[StateKey, Pdu]) -> bool:
        """Public, knockable (where the version knows it) or world-readable."""
        rule = _content(state, _JOIN_RULES, "join_rule")
        version = snapshot.room_version
        if (
            rule == "public"
            or (rule == "knock" and version.knock_join_rule)
            or (rule == "knock_restricted" and version.knock_restricted_join_rule)
        ):
            return True
        visibility = _content(state, ("m.room.history_visibility", ""), "history_visibility")
        return visibility == "world_readable"

    async def _user_may_see(
        self, snapshot: RoomSnapshot, state: Mapping[StateKey, Pdu], user_id: UserID | None
    ) -> bool:
        if self._open_to_all(snapshot, state):
            return True
        if user_id is None:
            return False
        if snapshot.memberships.get(user_id) in ("join", "invite"):
            return True
        for allowed in _allowed_room_ids(state, snapshot.room_version):
            other = await self._state.get_room(allowed)
            if other is not None and other.memberships.get(user_id) == "join":
                return True
        return False

    async def _server_may_see(
        self, snapshot: RoomSnapshot, state: Mapping[StateKey, Pdu], origin: ServerName
    ) -> bool:
        if self._open_to_all(snapshot, state):
            return True
        if origin in snapshot.joined_servers() or any(
            m == "invite" and server_name_of(u) == origin for u, m in snapshot.memberships.items()
        ):
            return True
        for allowed in _allowed_room_ids(state, snapshot.room_version):
            other = await self._state.get_room(allowed)
            if other is not None and origin in other.joined_servers():
                return True
        return False

    # -- the summary -------------------------------------------------------------------

    def _entry(self, snapshot: RoomSnapshot, state: Mapping[StateKey, Pdu]) -> JsonDict:
        """The room's summary (room_summary.yaml without ``membership``), kept per state
        group."""
        key = (snapshot.room_id, snapshot.state_group.state_group, self._state.redaction_count)
        cached = self._entries.get(key)
        if cached is not None:
            return cached
        version = snapshot.room_version
        join_rule = _content(state, _JOIN_RULES, "join_rule")
        entry: dict[str, Any] = {
            "room_id": snapshot.room_id,
            "room_version": version.identifier,
            "name": _content(state, ("m.room.name", ""), "name"),
            "topic": _content(state, ("m.room.topic", ""), "topic"),
            "canonical_alias": _content(state, ("m.room.canonical_alias", ""), "alias"),
            "num_joined_members": snapshot.joined_count(),
            "avatar_url": _content(state, ("m.room.avatar", ""), "url"),
            "world_readable": _content(
                state, ("m.room.history_visibility", ""), "history_visibility"
            )
            == "world_readable",
            "guest_can_join": _content(state, ("m.room.guest_access", ""), "guest_access")
            == "can_join",
            "room_type": _content(state, _CREATE, "type"),
            "encryption": _content(state, ("m.room.encryption", ""), "algorithm"),
            "join_rule": join_rule,
        }
        allowed = _allowed_room_ids(state, version)
        if allowed:
            entry["allowed_room_ids"] = allowed
        summary = {k: v for k, v in entry.items() if v is not None}
        self._entries.put(key, summary)
        return summary


def _content(state: Mapping[StateKey, Pdu], key: StateKey, field: str) -> str | None:
    """A string field of a state event's content, else None."""
    event = state.get(key)
    value = None if event is None else event.content.get(field)
    return value if isinstance(value, str) else None


def _allowed_room_ids(state: Mapping[StateKey, Pdu], version: RoomVersion) -> list[RoomID]:
    """The rooms a ``restricted`` (or ``knock_restricted``) join rule lets members of
    in, where the room version has that rule."""
    event = state.get(_JOIN_RULES)
    if event is None:
        return []
    rule = event.content.get("join_rule")
    if not (
        (rule == "restricted" and version.restricted_join_rule)
        or (rule == "knock_restricted" and version.knock_restricted_join_rule)
    ):
        return []
    allow = event.content.get("allow")
    return [
        RoomID(entry["room_id"])
        for entry in (allow if isinstance(allow, list) else [])
        if isinstance(entry, dict)
        and entry.get("type") == "m.room_membership"
        and isinstance(entry.get("room_id"), str)
    ]


def _valid_via(via: Any) -> bool:
    return isinstance(via, list) and bool(via) and all(isinstance(v, str) for v in via)


def _child_order(event: Pdu) -> tuple[bool, str, int, str]:
    """Synapse's order of ``m.space.child`` events: a valid ``order`` (at most 50
    printable ASCII characters) first, then ``origin_server_ts``, then the room ID."""
    order = event.content.get("order")
    valid = isinstance(order, str) and len(order) <= 50 and all(" " <= c <= "~" for c in order)
    return (
        not valid,
        order if valid and isinstance(order, str) else "",
        event.origin_server_ts,
        event.state_key or "",
    )


def _checked_remote_summary(room: Any, room_id: RoomID) -> JsonDict | None:
    """The summary of ``room_id`` in another server's hierarchy answer, keeping only the
    spec's fields with the right types (None when it is not that room's)."""
    if not isinstance(room, dict) or room.get("room_id") != room_id:
        return None
    members = room.get("num_joined_members")
    summary: JsonDict = {
        "room_id": room_id,
        "num_joined_members": members if type(members) is int and members >= 0 else 0,
    }
    for field in _BOOL_FIELDS:
        summary[field] = room.get(field) is True
    for field in _STRING_FIELDS:
        value = room.get(field)
        if isinstance(value, str):
            summary[field] = value
    allowed = room.get("allowed_room_ids")
    if isinstance(allowed, list):
        ids = [r for r in allowed if isinstance(r, str) and r.startswith("!")]
        if ids:
            summary["allowed_room_ids"] = ids
    return summary
