"""Room previews (MSC3266) and the room entries of space hierarchies: the summary of a
room a user may be about to join (Client-Server API ``GET
/_matrix/client/v1/room_summary/{roomIdOrAlias}``) and who may see it, as Synapse's
``RoomSummaryHandler`` does them.

Who may see a summary ("room_summary", Synapse's ``_is_local_room_accessible``): anyone,
even unauthenticated, when the join rule is ``public`` (or ``knock`` /
``knock_restricted`` where the room version has it) or the history is
``world_readable``; a user who is joined or invited; a user joined to a room that the
``restricted`` join rule allows. A server: the same public conditions, or one of its
users is joined or invited, or is joined to an allowed room.

A room this server is not in is summarised by asking the ``via`` servers for its
hierarchy, then filtered for the user the same way with what the answer says. The
hierarchy walks themselves are ``services/rooms/hierarchy.py``'s.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from peyvand.errors import Errcode, MatrixError
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.room_versions import RoomVersion
from peyvand.lru import LRU
from peyvand.services.rooms.remote_hierarchy import RemoteHierarchies
from peyvand.services.rooms.space_children import local_children_state
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.types import JsonDict, RoomAlias, RoomID, ServerName, UserID, server_name_of

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
# Servers asked for a room this server is not in.
_MAX_VIA: Final = 5
_SPACE: Final = "m.space"

AliasLookup = Callable[[RoomAlias], Awaitable[JsonDict]]
"""alias -> ``{"room_id", "servers"}`` (``DirectoryService.get_alias``; 404 if unknown)."""


@dataclass(frozen=True, slots=True)
class RoomEntry:
    """A room as the hierarchy endpoints give it: its summary (room_summary.yaml) and,
    for a space, its ``m.space.child`` events stripped (``children_state``)."""

    room: JsonDict
    children_state: tuple[JsonDict, ...] = ()

    def as_json(self) -> JsonDict:
        return {**self.room, "children_state": list(self.children_state)}


class RoomSummaryService:
    def __init__(
        self,
        server_name: ServerName,
        state: StateService,
        index: RoomIndex,
        get_alias: AliasLookup,
        remote: RemoteHierarchies,
    ) -> None:
        """``remote`` asks other servers about rooms this one is not in."""
        self._server_name = server_name
        self._state = state
        self._index = index
        self._get_alias = get_alias
        self._remote = remote
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
        snapshot = await self.resident_room(room_id)
        if snapshot is not None:
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
        space = await self._remote.ask(room_id, via[:_MAX_VIA], suggested_only=True)
        if space is None or not await self.remote_visible(user_id, room_id, space.room):
            raise MatrixError(Errcode.NOT_FOUND, "Room not found or is not accessible")
        return dict(space.room)

    async def remote_visible(self, user_id: UserID | None, room_id: RoomID, room: JsonDict) -> bool:
        """Whether ``user_id`` may see a room this server is not in, from ``room``, its
        summary by another server (Synapse's ``_is_remote_room_accessible``): the
        answer's public conditions (the version is unknown, so ``knock`` counts), else
        the user's own memberships here: in an allowed room, or invited."""
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

    # -- hierarchy entries -------------------------------------------------------------

    async def resident_room(self, room_id: RoomID) -> RoomSnapshot | None:
        """The room if this server takes part in it (so it can vouch for its state)."""
        snapshot = await self._state.get_room(room_id)
        if snapshot is None or not snapshot.takes_part(self._server_name):
            return None
        return snapshot

    async def local_entry(
        self,
        snapshot: RoomSnapshot,
        *,
        user_id: UserID | None = None,
        origin: ServerName | None = None,
        suggested_only: bool = False,
        include_children: bool = True,
    ) -> RoomEntry | None:
        """The room's hierarchy entry for ``user_id`` or, over federation, ``origin``;
        None when the requester may not see it. Only a space (``m.space`` room type)
        names its children, and only the suggested ones with ``suggested_only``."""
        state = await self._summary_state(snapshot)
        if origin is not None:
            visible = await self._server_may_see(snapshot, state, origin)
        else:
            visible = await self._user_may_see(snapshot, state, user_id)
        if not visible:
            return None
        room = self._entry(snapshot, state)
        if not include_children or room.get("room_type") != _SPACE:
            return RoomEntry(room)
        children = await local_children_state(self._state, snapshot, suggested_only=suggested_only)
        return RoomEntry(room, children)

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
