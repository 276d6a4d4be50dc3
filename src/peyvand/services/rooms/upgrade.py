"""Room upgrades: POST /rooms/{roomId}/upgrade (Client-Server API, "Room Upgrades",
"Server behaviour"), done as Synapse does it.

1. The upgrader must be joined and allowed to send ``m.room.tombstone`` (403 otherwise);
   an unknown room is 404, an unknown version 400 ``M_UNSUPPORTED_ROOM_VERSION``.
2. The replacement room's ``m.room.create`` names its ``predecessor`` (with the
   tombstone's event ID, except for versions whose room ID is the create event's hash,
   where the spec lets it be omitted) and keeps the old room's ``type`` and
   ``m.federate: false``. In versions whose creators have infinite power (v12) it holds
   the request's ``additional_creators`` (spec v1.16), as given: the old room's are not
   carried over. Other versions ignore the field, unchecked, as Synapse.
3. The transferable state the spec recommends is copied (server ACL, encryption, name,
   avatar, topic, guest access, history visibility, join rules, power levels) over the
   ``private_chat`` preset's state, and bans with it; the upgrader holds enough power
   to send it all, then the old power levels are restored. Under infinite creator
   power the creators (upgrader and additional creators) leave the copied ``users``
   map, which may not name them (v12 authorization rule 10.4).
4. Local aliases move to the new room with the canonical alias; a published room is
   published in its replacement instead.
5. The tombstone goes into the old room, whose ``events_default`` and ``invite`` levels
   are raised to the greater of 50 and ``users_default + 1``.
6. Local members' push rules and tags for the old room are copied to the new one, which
   joins the old one in their ``m.direct``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from peyvand.errors import Errcode, MatrixError
from peyvand.events.auth import get_send_level, get_user_power_level
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.room_versions import RoomVersion, room_version_or_none
from peyvand.services.push.rules_api import PushRulesService
from peyvand.services.sync.account_data import AccountDataService
from peyvand.services.timeline.event_creation import EventCreationService, EventSpec
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.storage.events import EventStore
from peyvand.types import (
    JsonDict,
    RoomID,
    ServerName,
    UserID,
    is_valid_user_id,
    server_name_of,
)

logger = logging.getLogger(__name__)

ProfileLookup = Callable[[UserID], Awaitable[JsonDict]]

CREATE_KEY: Final[StateKey] = ("m.room.create", "")
POWER_LEVELS_KEY: Final[StateKey] = ("m.room.power_levels", "")
CANONICAL_ALIAS_KEY: Final[StateKey] = ("m.room.canonical_alias", "")
JOIN_RULES_KEY: Final[StateKey] = ("m.room.join_rules", "")
# "Server behaviour", step 3: the recommended transferable state (power levels apart),
# in the order the new room receives it from Synapse: its ``types_to_copy`` order (join
# rules, name, topic, history visibility, guest access, ...), except that the keys its
# current-state cache holds come first. After a join that is the join rules and history
# visibility (its user directory reads both), so those two lead here.
TRANSFERRED: Final = (
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.name",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
)
# The state of the ``private_chat`` preset (createRoom), under the transferred state.
PRIVATE_CHAT_STATE: Final[Mapping[str, Mapping[str, Any]]] = {
    "m.room.join_rules": {"join_rule": "invite"},
    "m.room.history_visibility": {"history_visibility": "shared"},
    "m.room.guest_access": {"guest_access": "can_join"},
}
# The integer levels of m.room.power_levels, top level and per map.
_LEVELS: Final = (
    "ban",
    "events_default",
    "invite",
    "kick",
    "redact",
    "state_default",
    "users_default",
)
_LEVEL_MAPS: Final = ("events", "users", "notifications")


class RoomUpgradeService:
    def __init__(
        self,
        server_name: ServerName,
        events: EventCreationService,
        state: StateService,
        event_store: EventStore,
        move_aliases: Callable[[RoomID, RoomID], Awaitable[None]],
        push_rules: PushRulesService,
        account_data: AccountDataService,
        profile_of: ProfileLookup,
    ) -> None:
        self._server_name = server_name
        self._events = events
        self._state = state
        self._event_store = event_store
        self._move_aliases_to = move_aliases
        self._push_rules = push_rules
        self._account_data = account_data
        self._profile_of = profile_of
        # Rooms being upgraded right now: a second request meanwhile is refused.
        self._upgrading: set[RoomID] = set()

    async def upgrade(
        self,
        user_id: UserID,
        room_id: RoomID,
        new_version: str,
        additional_creators: object = None,
    ) -> RoomID:
        """Replace ``room_id`` by a new room of ``new_version``; the new room's ID.

        ``additional_creators`` is the request's field as sent (None if absent or null):
        checked and used only if ``new_version`` gives creators infinite power.
        """
        version = room_version_or_none(new_version)
        if version is None:
            raise MatrixError(
                Errcode.UNSUPPORTED_ROOM_VERSION, f"Room version {new_version} is not supported"
            )
        additional: list[UserID] | None = None
        if version.creators_have_infinite_power and additional_creators is not None:
            additional = _checked_additional_creators(additional_creators)
        snapshot = await self._state.get_room(room_id)
        row = await self._event_store.get_room(room_id)
        if snapshot is None or row is None or not snapshot.takes_part(self._server_name):
            raise MatrixError(Errcode.NOT_FOUND, f"Unknown room {room_id}")
        if room_id in self._upgrading:
            raise MatrixError(Errcode.UNKNOWN, "An upgrade for this room is already in progress")
        self._upgrading.add(room_id)
        try:
            return await self._upgrade(user_id, snapshot, version, row.is_public, additional)
        finally:
            self._upgrading.discard(room_id)

    async def _upgrade(
        self,
        user_id: UserID,
        snapshot: RoomSnapshot,
        version: RoomVersion,
        is_public: bool,
        additional_creators: list[UserID] | None,
    ) -> RoomID:
        room_id = snapshot.room_id
        banned = [u for u, m in snapshot.memberships.items() if m == "ban"]
        keys = [
            CREATE_KEY,
            POWER_LEVELS_KEY,
            CANONICAL_ALIAS_KEY,
            *((t, "") for t in TRANSFERRED),
            *(("m.room.member", u) for u in banned),
        ]
        old = await self._state.get_state_events(snapshot.state, keys)
        old_level = self._check_may_upgrade(user_id, snapshot, old)
        create = old[CREATE_KEY]
        creation: JsonDict = {
            "room_version": version.identifier,
            "predecessor": {"room_id": room_id},
        }
        if additional_creators is not None:
            creation["additional_creators"] = additional_creators
        if create.content.get("m.federate") is False:
            creation["m.federate"] = False
        if "type" in create.content:
            creation["type"] = create.content["type"]
        if not version.implicit_room_creator:
            creation["creator"] = user_id
        tombstone_id = None
        new_room_id = None
        if not version.room_id_is_create_event_hash:
            new_room_id = self._events.new_room_id(beside=room_id)
            tombstone_id = await self._tombstone(user_id, room_id, new_room_id)
            creation["predecessor"]["event_id"] = tombstone_id
        power = old.get(POWER_LEVELS_KEY)
        creators = {user_id, *(additional_creators or ())}
        final_levels = _final_power_levels(
            None if power is None else power.content, user_id, creators, old_level, version
        )
        initial = [
            EventSpec(
                "m.room.member", {"membership": "join", **await self._profile_of(user_id)}, user_id
            ),
            EventSpec("m.room.power_levels", _raised(final_levels, user_id, version), ""),
            *self._transferred_state(old, version),
            *(
                EventSpec("m.room.member", _ban_content(old[("m.room.member", u)]), u)
                for u in banned
                if ("m.room.member", u) in old
            ),
        ]
        created, _ = await self._events.create_room(
            version, user_id, creation, initial, room_id=new_room_id, is_public=is_public
        )
        if tombstone_id is None:
            await self._tombstone(user_id, room_id, created)
        if is_public:
            await self._event_store.set_room_public(room_id, False)
        await self._move_aliases(user_id, room_id, created, old.get(CANONICAL_ALIAS_KEY))
        local_members = [
            u
            for u, m in snapshot.memberships.items()
            if m == "join" and server_name_of(u) == self._server_name
        ]
        for member in local_members:
            await self._push_rules.copy_room_rules(member, room_id, created)
            await self._account_data.copy_on_room_upgrade(member, room_id, created)
        await self._restrict_old_room(user_id, room_id, power)
        if final_levels != initial[1].content:
            await self._events.send(
                created, user_id, EventSpec("m.room.power_levels", final_levels, "")
            )
        return created

    def _check_may_upgrade(
        self, user_id: UserID, snapshot: RoomSnapshot, old: Mapping[StateKey, Pdu]
    ) -> int | float:
        """The upgrader's power level in the old room; 403 unless they are joined and may
        send ``m.room.tombstone`` ("Server behaviour", step 1)."""
        if snapshot.memberships.get(user_id) != "join":
            raise MatrixError(Errcode.FORBIDDEN, "You are not in this room")
        power = old.get(POWER_LEVELS_KEY)
        needed = get_send_level("m.room.tombstone", "", power.content if power else None)
        level = get_user_power_level(user_id, old, snapshot.room_version)
        if level < needed:
            raise MatrixError(Errcode.FORBIDDEN, "You may not upgrade this room")
        return level

    async def _tombstone(self, user_id: UserID, room_id: RoomID, replacement: RoomID) -> str:
        content = {"body": "This room has been replaced", "replacement_room": replacement}
        event = await self._events.send(
            room_id, user_id, EventSpec("m.room.tombstone", content, "")
        )
        return event.pdu.event_id

    @staticmethod
    def _transferred_state(old: Mapping[StateKey, Pdu], version: RoomVersion) -> list[EventSpec]:
        """The transferred state over the ``private_chat`` preset's, as Synapse builds the
        replacement room (so it has guest access and the like even if the old room had
        none): first the preset's events the old room has no copy of, then the copies in
        ``TRANSFERRED`` order."""
        copied: dict[str, Mapping[str, Any]] = {}
        for event_type in TRANSFERRED:
            event = old.get((event_type, ""))
            if event is not None and event.content:
                copied[event_type] = event.content
        rules = copied.get("m.room.join_rules")
        if rules is not None and not _join_rule_allowed(rules, version):
            copied["m.room.join_rules"] = PRIVATE_CHAT_STATE["m.room.join_rules"]
        preset = {t: c for t, c in PRIVATE_CHAT_STATE.items() if t not in copied}
        return [EventSpec(t, dict(c), "") for t, c in (*preset.items(), *copied.items())]

    async def _move_aliases(
        self, user_id: UserID, old_room: RoomID, new_room: RoomID, canonical: Pdu | None
    ) -> None:
        """ "Server behaviour", step 4: local aliases point at the new room; the canonical
        alias event moves with them (dropped from the old room where its levels allow)."""
        await self._move_aliases_to(old_room, new_room)
        if canonical is None or not canonical.content:
            return
        aliases = {k: v for k, v in canonical.content.items() if k in ("alias", "alt_aliases")}
        if not aliases:
            return
        await self._events.send(
            new_room, user_id, EventSpec("m.room.canonical_alias", dict(canonical.content), "")
        )
        rest = {k: v for k, v in canonical.content.items() if k not in aliases}
        try:
            await self._events.send(
                old_room, user_id, EventSpec("m.room.canonical_alias", rest, "")
            )
        except MatrixError as exc:
            logger.warning("could not drop the canonical alias of %s: %s", old_room, exc.message)

    async def _restrict_old_room(self, user_id: UserID, room_id: RoomID, power: Pdu | None) -> None:
        """ "Server behaviour", step 6: members below the upgrader stop sending and inviting."""
        if power is None:
            return
        content = _fixed_power_levels(power.content)
        users_default = content.get("users_default", 0)
        restricted = max(50, users_default + 1 if isinstance(users_default, int) else 1)
        changed = False
        for name in ("events_default", "invite"):
            current = content.get(name, 0)
            if not isinstance(current, int) or current < restricted:
                content[name] = restricted
                changed = True
        if not changed:
            return
        try:
            await self._events.send(room_id, user_id, EventSpec("m.room.power_levels", content, ""))
        except MatrixError as exc:
            logger.warning("could not restrict the power levels of %s: %s", room_id, exc.message)


def _join_rule_allowed(content: Mapping[str, Any], version: RoomVersion) -> bool:
    rule = content.get("join_rule")
    if rule == "knock":
        return version.knock_join_rule
    if rule == "restricted":
        return version.restricted_join_rule
    if rule == "knock_restricted":
        return version.knock_restricted_join_rule
    return True


def _ban_content(event: Pdu) -> JsonDict:
    content: JsonDict = {"membership": "ban"}
    reason = event.content.get("reason")
    if isinstance(reason, str):
        content["reason"] = reason
    return content


def _as_int(value: Any) -> int | None:
    """A power level as an integer (older rooms allow strings and floats), else None."""
    if type(value) is int:
        return value
    try:
        return int(value) if isinstance(value, str | float) else None
    except (ValueError, OverflowError):
        return None


def _fixed_power_levels(content: Mapping[str, Any]) -> JsonDict:
    """``content`` with every level an integer (as Synapse's
    ``copy_and_fixup_power_levels_contents``), so it is valid in any room version;
    levels that are no numbers are dropped."""
    fixed: JsonDict = {}
    for name, value in content.items():
        if name in _LEVEL_MAPS and isinstance(value, Mapping):
            fixed[name] = {k: level for k, v in value.items() if (level := _as_int(v)) is not None}
        elif name in _LEVELS:
            if (level := _as_int(value)) is not None:
                fixed[name] = level
        else:
            fixed[name] = value
    return fixed


def _checked_additional_creators(value: object) -> list[UserID]:
    """The upgrade request's ``additional_creators``: an array of user IDs, else 400
    (as Synapse's ``check_valid_additional_creators``, which answers M_FORBIDDEN with the
    400; here M_BAD_JSON for the wrong JSON type, M_INVALID_PARAM for a bad user ID)."""
    if not isinstance(value, list):
        raise MatrixError(Errcode.BAD_JSON, "'additional_creators' must be an array")
    creators: list[UserID] = []
    for entry in value:
        if not isinstance(entry, str):
            raise MatrixError(Errcode.BAD_JSON, "'additional_creators' must hold strings")
        if not is_valid_user_id(entry):
            raise MatrixError(
                Errcode.INVALID_PARAM, f"Invalid user ID in 'additional_creators': {entry}"
            )
        creators.append(UserID(entry))
    return creators


def _final_power_levels(
    content: Mapping[str, Any] | None,
    user_id: UserID,
    creators: set[UserID],
    old_level: int | float,
    version: RoomVersion,
) -> JsonDict:
    """The new room's power levels after the upgrade: the old room's. Under infinite
    creator power the new room's ``creators`` (the upgrader and additional creators) may
    not be listed; the upgrader, a creator of an old room with infinite power, keeps 100
    in a version without it."""
    levels = _fixed_power_levels(content or {})
    users = dict(levels.get("users", {}))
    if version.creators_have_infinite_power:
        for creator in creators:
            users.pop(creator, None)
    elif old_level == float("inf"):
        users[user_id] = 100
    levels["users"] = users
    return levels


def _raised(levels: JsonDict, user_id: UserID, version: RoomVersion) -> JsonDict:
    """``levels`` with the upgrader able to send every transferred state event and ban."""
    if version.creators_have_infinite_power:
        return levels
    events = levels.get("events", {})
    needed = max(
        [
            levels.get("state_default", 50),
            levels.get("ban", 50),
            *(v for v in events.values() if isinstance(v, int)),
        ]
    )
    users = dict(levels.get("users", {}))
    if users.get(user_id, levels.get("users_default", 0)) >= needed:
        return levels
    users[user_id] = needed
    return {**levels, "users": users}
