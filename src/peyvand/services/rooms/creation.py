"""Room creation (Client-Server API, "Creation": POST /createRoom).

Events are created in the spec's order: m.room.create, the creator's join,
m.room.power_levels, m.room.canonical_alias, the preset's join rules / history visibility /
guest access, ``initial_state``, name, topic, then the invites of local users. The power
levels are the ``m.room.power_levels`` of ``initial_state`` when it has one (sent in the
power levels' place, and then ``power_level_content_override`` does not apply, as in
Synapse's ``_send_events_for_new_room``), else the defaults updated with the override.
All of them share one group commit. Users of other servers are invited afterwards, one by
one, through ``MembershipService.invite`` as ``/invite`` does (their server must
countersign the invite: Server-Server API, "Inviting to a room"), as Synapse does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from peyvand.errors import Errcode, MatrixError
from peyvand.events.room_versions import (
    DEFAULT_ROOM_VERSION,
    RoomVersion,
    room_version_or_none,
)
from peyvand.services.appservice.registration import ApplicationService
from peyvand.services.rooms.canonical_alias import check_new_room_aliases
from peyvand.services.rooms.policy_lists import PolicyListService
from peyvand.services.timeline.event_creation import EventCreationService, EventSpec
from peyvand.storage.events import EventStore
from peyvand.types import (
    JsonDict,
    RoomAlias,
    RoomID,
    ServerName,
    UserID,
    is_valid_user_id,
    server_name_of,
)

PRESETS = ("private_chat", "public_chat", "trusted_private_chat")
# Keys the server sets itself; initial_state may not override them.
_SERVER_SET_STATE = {"m.room.create", "m.room.member"}
_POWER_LEVELS = ("m.room.power_levels", "")

ProfileLookup = Callable[[UserID], Awaitable[JsonDict]]
AliasResolver = Callable[[RoomAlias], Awaitable[RoomID | None]]
# (alias, room, creator, the appservice whose as_token made the request) -> the alias.
AliasCreator = Callable[
    [RoomAlias, RoomID, UserID, ApplicationService | None], Awaitable[RoomAlias]
]
# Raises unless the creator (through that appservice, if any) may create the alias.
AliasCheck = Callable[[RoomAlias, UserID, ApplicationService | None], None]


class Inviter(Protocol):
    """``MembershipService.invite``."""

    async def __call__(
        self,
        room_id: RoomID,
        sender: UserID,
        target: UserID,
        reason: str | None = None,
        *,
        is_direct: bool = False,
    ) -> None: ...


@dataclass(frozen=True)
class CreateRoomRequest:
    creator: UserID
    visibility: str = "private"
    preset: str | None = None
    name: str | None = None
    topic: str | None = None
    invite: tuple[UserID, ...] = ()
    is_direct: bool = False
    room_version: str | None = None
    creation_content: Mapping[str, Any] = field(default_factory=dict)
    initial_state: tuple[EventSpec, ...] = ()
    power_level_content_override: Mapping[str, Any] | None = None
    room_alias_name: str | None = None
    # The appservice whose as_token made the request (it alone may use its exclusive
    # alias namespace, and only its own namespaces).
    appservice: ApplicationService | None = None


def default_power_levels(
    room_version: RoomVersion, creators: set[UserID], preset: str, invitees: tuple[UserID, ...]
) -> JsonDict:
    """The power levels Synapse gives a new room (creators at 100 before v12; in a
    ``public_chat`` room, ``m.call.invite`` at 50).

    From room version 12 ``m.room.tombstone`` needs 150, above every level a non-creator
    can be given by default: createRoom says it "MUST explicitly be higher than
    ``state_default``. For example, set to 150 instead of 100". No ``notifications``
    key, as in Synapse: absent, ``room`` is 50 (``m.room.power_levels``).
    """
    users: dict[str, int] = {}
    if not room_version.creators_have_infinite_power:
        users.update({c: 100 for c in creators})
    if preset == "trusted_private_chat" and not room_version.creators_have_infinite_power:
        users.update({u: 100 for u in invitees})
    # A public room's call invites (refused anyway while it is public) need 50, as in
    # Synapse's public_chat preset.
    calls = {"m.call.invite": 50} if preset == "public_chat" else {}
    return {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 150 if room_version.creators_have_infinite_power else 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
            **calls,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "historical": 100,
    }


class RoomsService:
    def __init__(
        self,
        server_name: ServerName,
        events: EventCreationService,
        store: EventStore,
        profile_of: ProfileLookup,
        resolve_alias: AliasResolver,
        create_alias: AliasCreator,
        check_alias: AliasCheck,
        policy_lists: PolicyListService,
        invite: Inviter,
        *,
        federates: bool,
    ) -> None:
        """Room aliases are the directory's (``resolve_alias``, ``create_alias``,
        ``check_alias`` before the room is created);
        ``policy_lists`` refuses the initial invites the moderation policy lists ban;
        users of other servers are invited with ``invite`` (the /invite path), and only
        when the server ``federates``."""
        self._server_name = server_name
        self._events = events
        self._store = store
        self._profile_of = profile_of
        self._resolve_alias = resolve_alias
        self._create_alias = create_alias
        self._check_alias = check_alias
        self._policy_lists = policy_lists
        self._invite = invite
        self._federates = federates

    async def resolve_room(self, room_id_or_alias: str) -> RoomID:
        """A room ID, or the room an alias (``#alias:server``) points to; 404 if unknown."""
        if room_id_or_alias.startswith("!"):
            return RoomID(room_id_or_alias)
        if room_id_or_alias.startswith("#"):
            room_id = await self._resolve_alias(RoomAlias(room_id_or_alias))
            if room_id is not None:
                return room_id
            raise MatrixError(Errcode.NOT_FOUND, f"Room alias {room_id_or_alias} not found")
        raise MatrixError(Errcode.INVALID_PARAM, f"Invalid room ID or alias: {room_id_or_alias}")

    async def joined_rooms(self, user_id: UserID) -> list[RoomID]:
        memberships = await self._store.get_memberships_for_user(user_id)
        return sorted(r for r, (m, _) in memberships.items() if m == "join")

    async def create_room(self, request: CreateRoomRequest) -> RoomID:
        version = (
            DEFAULT_ROOM_VERSION
            if request.room_version is None
            else room_version_or_none(request.room_version)
        )
        if version is None:
            raise MatrixError(
                Errcode.UNSUPPORTED_ROOM_VERSION,
                f"Room version {request.room_version} is not supported",
            )
        for user in request.invite:
            if not is_valid_user_id(user):
                raise MatrixError(Errcode.INVALID_PARAM, f"Invalid user ID to invite: {user}")
            self._policy_lists.check_user(request.creator)
            self._policy_lists.check_user(user)
        preset = request.preset or (
            "public_chat" if request.visibility == "public" else "private_chat"
        )
        creator = request.creator
        create_content: JsonDict = dict(request.creation_content)
        create_content["room_version"] = version.identifier
        if not version.implicit_room_creator:
            create_content["creator"] = creator
        else:
            create_content.pop("creator", None)
        creators = {creator}
        if version.creators_have_infinite_power and preset == "trusted_private_chat":
            extra = [u for u in request.invite if u != creator]
            existing = create_content.get("additional_creators", [])
            if isinstance(existing, list):
                create_content["additional_creators"] = sorted(set(existing) | set(extra))
        if version.creators_have_infinite_power:
            additional = create_content.get("additional_creators", [])
            if isinstance(additional, list):
                creators.update(UserID(u) for u in additional if isinstance(u, str))

        overrides = {
            (spec.event_type, spec.state_key or ""): spec
            for spec in request.initial_state
            if spec.event_type not in _SERVER_SET_STATE
        }
        given_power_levels = overrides.pop(_POWER_LEVELS, None)
        if given_power_levels is not None:
            power_levels = dict(given_power_levels.content)
        else:
            power_levels = default_power_levels(version, creators, preset, request.invite)
            if request.power_level_content_override:
                power_levels.update(request.power_level_content_override)

        initial: list[EventSpec] = [
            EventSpec(
                "m.room.member",
                {"membership": "join", **await self._profile_of(creator)},
                creator,
            ),
            EventSpec("m.room.power_levels", power_levels, ""),
        ]
        alias = None
        if request.room_alias_name is not None:
            alias = RoomAlias(f"#{request.room_alias_name}:{self._server_name}")
            self._check_alias(alias, creator, request.appservice)
            if await self._resolve_alias(alias) is not None:
                raise MatrixError(Errcode.ROOM_IN_USE, f"Room alias {alias} already taken")
            initial.append(EventSpec("m.room.canonical_alias", {"alias": alias}, ""))
        join_rule = "public" if preset == "public_chat" else "invite"
        initial += [
            EventSpec("m.room.join_rules", {"join_rule": join_rule}, ""),
            EventSpec("m.room.history_visibility", {"history_visibility": "shared"}, ""),
        ]
        if preset != "public_chat":
            initial.append(EventSpec("m.room.guest_access", {"guest_access": "can_join"}, ""))
        canonical = overrides.get(("m.room.canonical_alias", ""))
        if canonical is not None:
            check_new_room_aliases(canonical.content, alias)
        initial = [s for s in initial if (s.event_type, s.state_key) not in overrides]
        initial += overrides.values()
        if request.name is not None:
            initial.append(EventSpec("m.room.name", {"name": request.name}, ""))
        if request.topic is not None:
            initial.append(EventSpec("m.room.topic", {"topic": request.topic}, ""))
        remote_invitees = dict.fromkeys(
            u for u in request.invite if server_name_of(u) != self._server_name
        )
        if remote_invitees and not self._federates:
            raise MatrixError(Errcode.FORBIDDEN, "Federation is disabled on this server")
        for invitee in request.invite:
            if invitee in remote_invitees:
                continue
            content: JsonDict = {"membership": "invite"}
            if request.is_direct:
                content["is_direct"] = True
            content.update(await self._profile_of(invitee))
            initial.append(EventSpec("m.room.member", content, invitee))

        room_id = None if version.room_id_is_create_event_hash else self._events.new_room_id()
        created, _ = await self._events.create_room(
            version,
            creator,
            create_content,
            initial,
            room_id=room_id,
            is_public=request.visibility == "public",
        )
        if alias is not None:
            await self._create_alias(alias, created, creator, request.appservice)
        for invitee in remote_invitees:
            await self._invite(created, creator, invitee, is_direct=request.is_direct)
        return created
