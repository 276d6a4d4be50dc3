"""Room aliases and the published room list (Client-Server API, "Room aliases",
"Listing rooms"; Server-Server API, "Public Room Directory").

Aliases live in the ``room_aliases`` table; only aliases on this server can be created
or deleted. The public room list is built from each published room's cached current
state (one batch read for the state events the cache misses), and each room's entry is
kept until its state group changes. Other servers get the rooms that federate (not
``m.federate: false``); another server's list is asked of it for a client that names it
(``?server=``).

Application services (Application Service API): an unknown local alias in an
appservice's alias namespace is asked of it (``GET /rooms/{alias}``, which may create the
room and alias) before it is called unknown; an alias in an exclusive namespace is
created or deleted only by its appservice, which needs no membership for it (M_EXCLUSIVE
for anyone else, and for an appservice outside its own namespaces, as Synapse). An
appservice also publishes rooms in one list per third-party network it bridges
(Client-Server API, "Application service room directory"): ``third_party_instance_id``
(``{appservice ID}|{network ID}``) lists one of them instead of the main list, and
``include_all_networks`` the main list and all of them.
"""

from __future__ import annotations

import bisect
import string
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from peyvand.errors import Errcode, MatrixError
from peyvand.events.auth import get_send_level, get_user_power_level
from peyvand.events.pdu import Pdu, StateKey
from peyvand.services.accounts.requester import Requester
from peyvand.services.appservice.registration import ApplicationService
from peyvand.services.appservice.registry import AppServiceRegistry
from peyvand.services.timeline.event_creation import EventCreationService, EventSpec
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.storage.directory import DirectoryStore
from peyvand.storage.errors import ConflictError
from peyvand.storage.events import EventStore
from peyvand.types import (
    EventID,
    JsonDict,
    RoomAlias,
    RoomID,
    ServerName,
    UserID,
    server_name_of,
    split_id,
)

# Synapse's limit (api/constants.py MAX_ALIAS_LENGTH).
MAX_ALIAS_LENGTH = 255

CANONICAL_ALIAS_KEY: StateKey = ("m.room.canonical_alias", "")
CREATE_KEY: StateKey = ("m.room.create", "")
POWER_LEVELS_KEY: StateKey = ("m.room.power_levels", "")
HISTORY_VISIBILITY_KEY: StateKey = ("m.room.history_visibility", "")
# The state a public room list entry is built from.
_ENTRY_KEYS: tuple[StateKey, ...] = (
    CREATE_KEY,
    ("m.room.name", ""),
    ("m.room.topic", ""),
    CANONICAL_ALIAS_KEY,
    ("m.room.avatar", ""),
    ("m.room.join_rules", ""),
    HISTORY_VISIBILITY_KEY,
    ("m.room.guest_access", ""),
)
# Rooms listed even when published: joinable or previewable without an invite (Synapse).
_LISTABLE_JOIN_RULES = {"public", "knock", "knock_restricted"}


@dataclass(frozen=True, slots=True)
class PublicRoomsQuery:
    limit: int | None = None
    since: str | None = None
    search_term: str | None = None
    # None: any type; otherwise the room types to list (None in it: rooms without a type).
    room_types: Sequence[str | None] | None = None
    # Which lists: the main one (neither), the main one and every appservice network's
    # (include_all_networks), or one network's ("{appservice ID}|{network ID}").
    include_all_networks: bool = False
    third_party_instance_id: str | None = None
    # For another server: only rooms that federate.
    federated_only: bool = False


@dataclass(frozen=True, slots=True)
class _Listed:
    """A room list entry with its sort key: most joined members first, then room ID."""

    joined: int
    room_id: RoomID
    entry: JsonDict
    room_type: str | None
    listable: bool
    federates: bool

    @property
    def key(self) -> tuple[int, str]:
        return (-self.joined, self.room_id)


def _token(direction: str, listed: _Listed) -> str:
    return f"{direction}{listed.joined}.{listed.room_id}"


def parse_instance_id(instance_id: str) -> tuple[str, str]:
    """``(appservice ID, network ID)`` of a ``third_party_instance_id``; M_INVALID_PARAM
    if it has no ``|`` (Synapse's ``ThirdPartyInstanceID``)."""
    appservice_id, sep, network_id = instance_id.partition("|")
    if not sep:
        raise MatrixError(Errcode.INVALID_PARAM, f"Invalid third_party_instance_id: {instance_id}")
    return appservice_id, network_id


def _parse_token(token: str) -> tuple[str, tuple[int, str]]:
    """``(direction, sort key)`` of a ``since`` token; M_INVALID_PARAM if malformed."""
    count, _, room_id = token[1:].partition(".")
    if token[:1] not in ("n", "p") or not count.isdigit() or not room_id:
        raise MatrixError(Errcode.INVALID_PARAM, "Invalid since token")
    return token[0], (-int(count), room_id)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _entry(snapshot: RoomSnapshot, state: dict[StateKey, Pdu]) -> _Listed:
    def content(event_type: str, key: str) -> object:
        event = state.get((event_type, ""))
        return None if event is None else event.content.get(key)

    joined = len(snapshot.joined_members())
    join_rule = _str_or_none(content("m.room.join_rules", "join_rule"))
    world_readable = content("m.room.history_visibility", "history_visibility") == "world_readable"
    room_type = _str_or_none(content("m.room.create", "type"))
    entry: JsonDict = {
        "room_id": snapshot.room_id,
        "name": _str_or_none(content("m.room.name", "name")),
        "topic": _str_or_none(content("m.room.topic", "topic")),
        "canonical_alias": _str_or_none(content("m.room.canonical_alias", "alias")),
        "num_joined_members": joined,
        "world_readable": world_readable,
        "guest_can_join": content("m.room.guest_access", "guest_access") == "can_join",
        "join_rule": join_rule,
        "avatar_url": _str_or_none(content("m.room.avatar", "url")),
        "room_type": room_type,
    }
    return _Listed(
        joined=joined,
        room_id=snapshot.room_id,
        entry={k: v for k, v in entry.items() if v is not None},
        room_type=room_type,
        listable=joined > 0 and (join_rule in _LISTABLE_JOIN_RULES or world_readable),
        federates=content("m.room.create", "m.federate") is not False,
    )


def _matches(listed: _Listed, query: PublicRoomsQuery) -> bool:
    if query.federated_only and not listed.federates:
        return False
    if query.room_types and listed.room_type not in query.room_types:
        return False
    if not query.search_term:
        return True
    term = query.search_term.lower()
    entry = listed.entry
    return listed.room_id == query.search_term or any(
        term in entry[field].lower()
        for field in ("name", "topic", "canonical_alias")
        if field in entry
    )


RemoteAliasLookup = Callable[[RoomAlias], Awaitable[JsonDict]]
# Asks the appservices whose namespace holds an unknown local alias; True if one made it.
AppServiceAliasQuery = Callable[[RoomAlias], Awaitable[bool]]
# (server, limit, since, filter, include_all_networks, third_party_instance_id) -> a page.
RemoteRoomList = Callable[
    [ServerName, int | None, str | None, JsonDict | None, bool, str | None], Awaitable[JsonDict]
]


async def no_remote_alias(alias: RoomAlias) -> JsonDict:
    """``RemoteAliasLookup`` where federation is off: another server's alias is unknown."""
    raise MatrixError(Errcode.NOT_FOUND, f"Room alias {alias} not found")


async def no_remote_room_list(
    server: ServerName,
    limit: int | None,
    since: str | None,
    search_filter: JsonDict | None,
    include_all_networks: bool,
    third_party_instance_id: str | None,
) -> JsonDict:
    """``RemoteRoomList`` where federation is off."""
    raise MatrixError(Errcode.INVALID_PARAM, "Other servers' room directories are not available")


class DirectoryService:
    def __init__(
        self,
        server_name: ServerName,
        store: DirectoryStore,
        event_store: EventStore,
        state: StateService,
        events: EventCreationService,
        remote_lookup: RemoteAliasLookup,
        remote_rooms: RemoteRoomList,
        appservices: AppServiceRegistry,
        appservice_alias_query: AppServiceAliasQuery,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Other servers' aliases are resolved with ``remote_lookup`` (GET
        /query/directory), their public room lists asked with ``remote_rooms``
        (/publicRooms); unknown aliases in an appservice's namespace are asked of it with
        ``appservice_alias_query``."""
        self._server_name = server_name
        self._appservices = appservices
        self._appservice_alias_query = appservice_alias_query
        self._store = store
        self._event_store = event_store
        self._state = state
        self._events = events
        self._clock = clock
        # room -> ((state group, redaction count) it was built at, entry).
        self._entries: dict[RoomID, tuple[tuple[int, int], _Listed]] = {}
        self._remote_lookup = remote_lookup
        self._remote_rooms = remote_rooms
        # Called with the room of every local alias created or deleted (application
        # services' interest counts a room's aliases at once).
        self.alias_hooks: list[Callable[[RoomID], None]] = []

    # -- aliases ---------------------------------------------------------------------

    def _check_alias(self, alias: RoomAlias) -> None:
        """M_INVALID_PARAM unless ``alias`` is a well-formed alias on this server."""
        try:
            localpart, domain = split_id(alias, "#")
        except ValueError:
            raise MatrixError(Errcode.INVALID_PARAM, "Room alias invalid") from None
        if len(alias) > MAX_ALIAS_LENGTH:
            raise MatrixError(
                Errcode.INVALID_PARAM,
                f"Can't create aliases longer than {MAX_ALIAS_LENGTH} characters",
            )
        if not localpart or any(c in localpart for c in string.whitespace + ":"):
            raise MatrixError(Errcode.INVALID_PARAM, "Invalid characters in room alias")
        if domain != self._server_name:
            raise MatrixError(Errcode.INVALID_PARAM, "Room alias must be local")

    async def resolve_alias(self, alias: RoomAlias) -> RoomID | None:
        """The room a local alias points to; None for unknown (or other servers') aliases.
        No appservice is asked (createRoom checks with it that an alias is free: a bridge
        creating a portal while it answers the query must not be asked again)."""
        if server_name_of(alias) != self._server_name:
            return None
        self._check_alias(alias)
        row = await self._store.get_alias(alias)
        return None if row is None else row.room_id

    def check_alias_change(
        self, alias: RoomAlias, user_id: UserID, appservice: ApplicationService | None
    ) -> None:
        """M_EXCLUSIVE unless ``user_id`` (through ``appservice`` when the request came with
        its as_token) may create or delete ``alias``; every alias change goes through it
        (Application Service API, "Registration": an exclusive namespace is its
        appservice's alone). As Synapse's ``create_association``/``can_modify_alias``: an
        appservice only inside its own alias namespaces, and, stricter, not in another
        appservice's exclusive one; anyone else outside every exclusive namespace, except
        the owning appservice's bot (``sender``) with an ordinary access token."""
        owners = self._appservices.exclusive_owners_of_alias(alias)
        if appservice is not None:
            if not appservice.is_alias_in_namespace(alias):
                raise MatrixError(
                    Errcode.EXCLUSIVE,
                    "This application service has not reserved this kind of alias.",
                )
            owners = [s for s in owners if s.id != appservice.id]
        else:
            owners = [s for s in owners if s.sender != user_id]
        if owners:
            raise MatrixError(
                Errcode.EXCLUSIVE, "This alias is reserved by an application service."
            )

    async def _insert(self, alias: RoomAlias, room_id: RoomID, creator: UserID) -> None:
        try:
            await self._store.create_alias(alias, room_id, creator, int(self._clock() * 1000))
        except ConflictError:
            raise MatrixError(
                Errcode.UNKNOWN, f"Room alias {alias} already exists", status=409
            ) from None
        for hook in self.alias_hooks:
            hook(room_id)

    async def move_aliases(self, old_room: RoomID, new_room: RoomID) -> None:
        """Every local alias of ``old_room`` now points at ``new_room`` (a room upgrade,
        "Server behaviour" step 4); both rooms' aliases changed for the hooks."""
        await self._store.move_aliases(old_room, new_room)
        for hook in self.alias_hooks:
            hook(old_room)
            hook(new_room)

    def check_alias_for_new_room(
        self, alias: RoomAlias, creator: UserID, appservice: ApplicationService | None
    ) -> None:
        """Raise unless ``creator`` (through ``appservice``, if any) may give a new room
        ``alias``, checked before the room is created: a well-formed local alias that
        ``check_alias_change`` allows."""
        self._check_alias(alias)
        self.check_alias_change(alias, creator, appservice)

    async def create_alias_for_new_room(
        self,
        alias: RoomAlias,
        room_id: RoomID,
        creator: UserID,
        appservice: ApplicationService | None,
    ) -> RoomAlias:
        """Point ``alias`` at a room just created by ``creator`` (createRoom's
        ``room_alias_name``); returns the alias."""
        self.check_alias_for_new_room(alias, creator, appservice)
        await self._insert(alias, room_id, creator)
        return alias

    async def get_alias(self, alias: RoomAlias) -> JsonDict:
        """The room an alias points to and servers to join it through; 404 if unknown."""
        try:
            split_id(alias, "#")
        except ValueError:
            raise MatrixError(Errcode.INVALID_PARAM, "Room alias invalid") from None
        if server_name_of(alias) != self._server_name:
            return await self._remote_lookup(alias)
        room_id = await self.resolve_alias(alias)
        if room_id is None and await self._appservice_alias_query(alias):
            room_id = await self.resolve_alias(alias)
        snapshot = None if room_id is None else await self._state.get_room(room_id)
        if room_id is None or snapshot is None:
            raise MatrixError(Errcode.NOT_FOUND, f"Room alias {alias} not found")
        others = {server_name_of(u) for u in snapshot.joined_members()} - {self._server_name}
        return {"room_id": room_id, "servers": [self._server_name, *sorted(others)]}

    async def set_alias(self, requester: Requester, alias: RoomAlias, room_id: RoomID) -> None:
        """Create a local alias; the requester must be in the room (unless a server admin
        or an appservice in its own namespace)."""
        self._check_alias(alias)
        self.check_alias_change(alias, requester.user_id, requester.appservice)
        snapshot = await self._state.get_room(room_id)
        if snapshot is None:
            raise MatrixError(Errcode.NOT_FOUND, "Room not found")
        if (
            not requester.is_admin
            and requester.appservice is None
            and snapshot.memberships.get(requester.user_id) != "join"
        ):
            raise MatrixError(
                Errcode.FORBIDDEN, "You must be in the room to create an alias for it"
            )
        await self._insert(alias, room_id, requester.user_id)

    async def delete_alias(self, requester: Requester, alias: RoomAlias) -> None:
        """Delete a local alias: allowed to its creator, a server admin, or a member who may
        send ``m.room.canonical_alias``, or to an appservice in its namespace; the alias is
        then dropped from that event too."""
        self._check_alias(alias)
        row = await self._store.get_alias(alias)
        if row is None:
            raise MatrixError(Errcode.NOT_FOUND, "Unknown room alias")
        if (
            requester.appservice is None
            and row.creator != requester.user_id
            and not await self._can_change_room_list(requester, row.room_id)
        ):
            raise MatrixError(Errcode.FORBIDDEN, "You don't have permission to delete the alias.")
        self.check_alias_change(alias, requester.user_id, requester.appservice)
        room_id = await self._store.delete_alias(alias)
        if room_id is None:
            raise MatrixError(Errcode.NOT_FOUND, "Unknown room alias")
        for hook in self.alias_hooks:
            hook(room_id)
        await self._remove_from_canonical_alias(requester.user_id, room_id, alias)

    async def _remove_from_canonical_alias(
        self, sender: UserID, room_id: RoomID, alias: RoomAlias
    ) -> None:
        snapshot = await self._state.get_room(room_id)
        if snapshot is None:
            return
        event = (await self._state.get_state_events(snapshot.state, [CANONICAL_ALIAS_KEY])).get(
            CANONICAL_ALIAS_KEY
        )
        if event is None:
            return
        content = dict(event.content)
        changed = content.get("alias") == alias
        if changed:
            del content["alias"]
        alt = content.get("alt_aliases")
        if isinstance(alt, list) and alias in alt:
            changed = True
            content["alt_aliases"] = [a for a in alt if a != alias]
            if not content["alt_aliases"]:
                del content["alt_aliases"]
        if not changed:
            return
        try:
            await self._events.send(
                room_id, sender, EventSpec("m.room.canonical_alias", content, "")
            )
        except MatrixError as exc:
            if exc.errcode != Errcode.FORBIDDEN:
                raise

    async def room_aliases(self, requester: Requester, room_id: RoomID) -> list[RoomAlias]:
        """The local aliases of a room: for members, server admins, or world-readable rooms."""
        if not requester.is_admin:
            snapshot = await self._state.get_room(room_id)
            readable = False
            if snapshot is not None:
                if snapshot.memberships.get(requester.user_id) == "join":
                    readable = True
                else:
                    state = await self._state.get_state_events(
                        snapshot.state, [HISTORY_VISIBILITY_KEY]
                    )
                    visibility = state.get(HISTORY_VISIBILITY_KEY)
                    readable = visibility is not None and (
                        visibility.content.get("history_visibility") == "world_readable"
                    )
            if not readable:
                raise MatrixError(
                    Errcode.FORBIDDEN,
                    f"User {requester.user_id} not in room {room_id},"
                    " and room previews are disabled",
                )
        return await self._store.get_aliases_for_room(room_id)

    # -- the published room list -----------------------------------------------------

    async def _can_change_room_list(self, requester: Requester, room_id: RoomID) -> bool:
        """Server admins, and members who could send ``m.room.canonical_alias`` (Synapse)."""
        if requester.is_admin:
            return True
        snapshot = await self._state.get_room(room_id)
        if snapshot is None or snapshot.memberships.get(requester.user_id) != "join":
            return False
        state = await self._state.get_state_events(snapshot.state, [CREATE_KEY, POWER_LEVELS_KEY])
        power_levels = state.get(POWER_LEVELS_KEY)
        needed = get_send_level(
            "m.room.canonical_alias", "", power_levels.content if power_levels else None
        )
        return get_user_power_level(requester.user_id, state, snapshot.room_version) >= needed

    async def get_visibility(self, room_id: RoomID) -> str:
        """``public`` if the room is published in the room list, else ``private``."""
        room = await self._event_store.get_room(room_id)
        if room is None:
            raise MatrixError(Errcode.NOT_FOUND, "Room not found")
        return "public" if room.is_public else "private"

    async def set_visibility(self, requester: Requester, room_id: RoomID, visibility: str) -> None:
        """Publish or unpublish a room: members with moderator power, or server admins."""
        if await self._event_store.get_room(room_id) is None:
            raise MatrixError(Errcode.NOT_FOUND, "Room not found")
        if not await self._can_change_room_list(requester, room_id):
            raise MatrixError(
                Errcode.FORBIDDEN,
                "This server requires you to be a moderator in the room to"
                " edit its room list entry",
            )
        await self._event_store.set_room_public(room_id, visibility == "public")

    async def set_appservice_visibility(
        self, requester: Requester, network_id: str, room_id: RoomID, visibility: str
    ) -> None:
        """``PUT /directory/list/appservice/{networkId}/{roomId}``: publish or unpublish
        a room in the requesting appservice's list for ``network_id``."""
        if requester.appservice is None:
            raise MatrixError(
                Errcode.FORBIDDEN, "Only appservices can edit the appservice published room list"
            )
        await self._store.set_appservice_room(
            requester.appservice.id, network_id, room_id, visibility == "public"
        )

    async def _listed_rooms(self, query: PublicRoomsQuery) -> list[_Listed]:
        """The listable entries of the lists ``query`` asks for (see the module's
        docstring), most joined members first. Entries of rooms in no list are dropped."""
        main = set(await self._event_store.get_public_room_ids())
        networks = await self._store.get_appservice_room_lists()
        if query.third_party_instance_id is not None:
            network = parse_instance_id(query.third_party_instance_id)
            asked = {r for appservice, net, r in networks if (appservice, net) == network}
        elif query.include_all_networks:
            asked = main | {room_id for *_, room_id in networks}
        else:
            asked = main
        published = main | {room_id for *_, room_id in networks}
        snapshots = [s for r in published if (s := await self._state.get_room(r)) is not None]
        stale = [
            s
            for s in snapshots
            if (cached := self._entries.get(s.room_id)) is None
            or cached[0] != (s.state_group.state_group, self._state.redaction_count)
        ]
        wanted: dict[RoomID, dict[StateKey, EventID]] = {
            s.room_id: {k: s.state[k] for k in _ENTRY_KEYS if k in s.state} for s in stale
        }
        events = await self._state.get_state_events_by_id(
            e for ids in wanted.values() for e in ids.values()
        )
        for snapshot in stale:
            state = {k: events[e].pdu for k, e in wanted[snapshot.room_id].items() if e in events}
            self._entries[snapshot.room_id] = (
                (snapshot.state_group.state_group, self._state.redaction_count),
                _entry(snapshot, state),
            )
        for room_id in [r for r in self._entries if r not in published]:
            del self._entries[room_id]
        return sorted(
            (
                listed
                for room_id, (_, listed) in self._entries.items()
                if listed.listable and room_id in asked
            ),
            key=lambda listed: listed.key,
        )

    async def public_rooms(
        self, query: PublicRoomsQuery, server: ServerName | None = None
    ) -> JsonDict:
        """A page of the public room list, with ``next_batch``/``prev_batch`` tokens: this
        server's, or that of ``server`` (its tokens passed on as they are)."""
        if server is not None and server != self._server_name:
            return await self._remote_public_rooms(server, query)
        listed = await self._listed_rooms(query)
        matching = [r for r in listed if _matches(r, query)]
        keys = [r.key for r in matching]
        limit = len(matching) if query.limit is None else query.limit
        start, end = 0, min(len(matching), limit)
        if query.since is not None:
            direction, bound = _parse_token(query.since)
            if direction == "n":
                start = bisect.bisect_right(keys, bound)
                end = min(len(matching), start + limit)
            else:
                end = bisect.bisect_left(keys, bound)
                start = max(0, end - limit)
        page = matching[start:end]
        result: JsonDict = {
            "chunk": [r.entry for r in page],
            "total_room_count_estimate": len(listed),
        }
        if page and end < len(matching):
            result["next_batch"] = _token("n", page[-1])
        if page and start > 0:
            result["prev_batch"] = _token("p", page[0])
        return result

    async def _remote_public_rooms(self, server: ServerName, query: PublicRoomsQuery) -> JsonDict:
        search_filter: JsonDict = {}
        if query.search_term:
            search_filter["generic_search_term"] = query.search_term
        if query.room_types is not None:
            search_filter["room_types"] = list(query.room_types)
        return await self._remote_rooms(
            server,
            query.limit,
            query.since,
            search_filter or None,
            query.include_all_networks,
            query.third_party_instance_id,
        )
