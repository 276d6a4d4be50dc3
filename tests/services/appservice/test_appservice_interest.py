"""An appservice's interest in events (Application Service API, "Pushing events"), with
the room's answer kept: a message in a big room nobody of the appservice is in costs one
namespace test (its sender's) once the room is known, a membership change costs the
changed users, and the canonical alias is read again only when its event changes."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any, cast

from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS
from peyvand.services.appservice.interest import AppServiceInterest
from peyvand.services.appservice.registration import ApplicationService, Namespace
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.storage.models import NewStateGroup, StateGroupRow, StoredEvent
from peyvand.types import EventID, RoomAlias, RoomID, ServerName, UserID

SERVER = ServerName("localhost")
ROOM = RoomID("!room:localhost")
MEMBERS = 5_000


class CountingPattern:
    """A compiled regex that counts its uses."""

    def __init__(self, regex: str) -> None:
        self._pattern = re.compile(regex)
        self.uses = 0

    def match(self, value: str) -> re.Match[str] | None:
        self.uses += 1
        return self._pattern.match(value)


def bridge(aliases: str | None = None) -> tuple[ApplicationService, CountingPattern]:
    users = CountingPattern("@ghost_.*:localhost")
    service = ApplicationService(
        id="bridge",
        url="http://127.0.0.1:9",
        as_token="as",
        hs_token="hs",
        sender=UserID("@bridgebot:localhost"),
        users=(Namespace(True, "@ghost_.*:localhost", cast(re.Pattern[str], users)),),
        aliases=() if aliases is None else (Namespace(False, aliases, re.compile(aliases)),),
        rooms=(),
    )
    return service, users


def snapshot(members: int) -> RoomSnapshot:
    memberships = {UserID(f"@user{i}:localhost"): "join" for i in range(members)}
    return RoomSnapshot(
        ROOM,
        KNOWN_ROOM_VERSIONS["11"],
        {},
        memberships,
        [],
        1,
        StateGroupRow(1, ROOM, 1, None, None),
    )


@dataclass
class FakeState:
    room: RoomSnapshot
    events: dict[str, dict[str, object]] = field(default_factory=dict)
    reads: int = 0

    def cached_room(self, room_id: RoomID) -> RoomSnapshot | None:
        return self.room if room_id == ROOM else None

    async def get_room(self, room_id: RoomID) -> RoomSnapshot | None:
        return self.cached_room(room_id)

    async def get_event(self, event_id: EventID) -> StoredEvent | None:
        self.reads += 1
        content = self.events.get(event_id)
        if content is None:
            return None
        return cast(StoredEvent, SimpleNamespace(pdu=SimpleNamespace(content=content)))


@dataclass
class FakeAliases:
    aliases: list[RoomAlias] = field(default_factory=list)
    reads: int = 0

    async def __call__(self, room_id: RoomID) -> list[RoomAlias]:
        self.reads += 1
        return list(self.aliases)


def interest(state: FakeState, aliases: FakeAliases) -> AppServiceInterest:
    return AppServiceInterest(SERVER, cast(StateService, state), aliases)


async def message(subject: AppServiceInterest, service: ApplicationService) -> bool:
    return await subject.is_interested(service, ROOM, "@user1:localhost", "m.room.message", None)


async def test_a_known_room_costs_one_namespace_test_per_message() -> None:
    service, users = bridge()
    state, aliases = FakeState(snapshot(MEMBERS)), FakeAliases()
    subject = interest(state, aliases)
    assert not await message(subject, service)
    # The sender, then each joined local member once.
    assert users.uses == 1 + MEMBERS
    users.uses = 0
    for _ in range(1_000):
        assert not await message(subject, service)
    assert users.uses == 1_000
    # No alias namespace: the directory is never read.
    assert aliases.reads == 0


async def test_membership_changes_cost_the_changed_users() -> None:
    service, users = bridge()
    state = FakeState(snapshot(MEMBERS))
    subject = interest(state, FakeAliases())
    assert not await message(subject, service)
    ghost = UserID("@ghost_1:localhost")
    state.room.set_membership(ghost, "join")
    state.room.set_membership(UserID("@remote:elsewhere"), "join")
    users.uses = 0
    assert await message(subject, service)
    assert users.uses == 2  # the sender and the ghost (the remote user is not local)
    state.room.set_membership(ghost, "leave")
    assert not await message(subject, service)
    # A snapshot reloaded (a failed commit) is scanned again.
    state.room = snapshot(10)
    state.room.set_membership(ghost, "join")
    users.uses = 0
    assert await message(subject, service)
    assert users.uses == 1 + 11


async def test_aliases_local_and_canonical() -> None:
    service, _ = bridge(aliases="#bridge_.*:localhost")
    state, aliases = FakeState(snapshot(3)), FakeAliases()
    subject = interest(state, aliases)
    assert not await message(subject, service)
    assert not await message(subject, service)
    assert aliases.reads == 1 and state.reads == 0
    # A canonical alias event in the namespace; read once, while it is the current one.
    state.events["$canonical"] = {
        "alias": "#other:localhost",
        "alt_aliases": ["#bridge_x:localhost"],
    }
    state.room.state[("m.room.canonical_alias", "")] = EventID("$canonical")
    assert await message(subject, service)
    assert await message(subject, service)
    assert state.reads == 1
    state.events["$replaced"] = {"alias": "#other:localhost"}
    state.room.state[("m.room.canonical_alias", "")] = EventID("$replaced")
    assert not await message(subject, service)
    # A local alias in the namespace counts once the kept ones are read again.
    aliases.aliases.append(RoomAlias("#bridge_local:localhost"))
    assert await interest(state, aliases).is_interested_in_room(service, ROOM)


async def test_sender_member_and_room_namespaces_need_no_room() -> None:
    service, _ = bridge()
    rooms = replace(service, rooms=(Namespace(False, "!room:.*", re.compile("!room:.*")),))
    subject = interest(FakeState(snapshot(0)), FakeAliases())
    unknown = RoomID("!unknown:localhost")
    assert await subject.is_interested(
        service, unknown, "@ghost_a:localhost", "m.room.message", None
    )
    assert await subject.is_interested(
        service, unknown, "@bridgebot:localhost", "m.room.message", None
    )
    assert await subject.is_interested(
        service, unknown, "@user1:localhost", "m.room.member", "@ghost_b:localhost"
    )
    assert not await subject.is_interested(
        service, unknown, "@user1:localhost", "m.room.message", "@ghost_b:localhost"
    )
    assert await subject.is_interested(rooms, ROOM, "@user1:localhost", "m.room.message", None)


async def test_an_alias_created_or_deleted_counts_at_once() -> None:
    """The directory tells when a room's local aliases change: the next event is decided
    with them, without waiting for the safety-net TTL."""
    service, _ = bridge(aliases="#bridge_.*:localhost")
    state, aliases = FakeState(snapshot(3)), FakeAliases()
    subject = interest(state, aliases)
    assert not await message(subject, service)
    aliases.aliases.append(RoomAlias("#bridge_plumbed:localhost"))
    subject.on_aliases_changed(ROOM)
    assert await message(subject, service)
    aliases.aliases.clear()
    subject.on_aliases_changed(ROOM)
    assert not await message(subject, service)
    assert aliases.reads == 3


@dataclass
class GroupState:
    """State groups of ``ROOM`` by ID (their whole state), and member events by ID."""

    groups: dict[int, dict[tuple[str, str], EventID]]
    memberships: dict[EventID, str]
    full_reads: int = 0

    async def state_ids_at_group(self, group: int) -> dict[tuple[str, str], EventID]:
        self.full_reads += 1
        return dict(self.groups[group])

    async def state_group_row(self, group: int) -> StateGroupRow:
        return StateGroupRow(group, ROOM, group, None, None)

    async def get_pdus(self, event_ids: Iterable[EventID]) -> dict[EventID, object]:
        return {e: SimpleNamespace(membership=self.memberships[e]) for e in event_ids}


def facts(sender: str, event_type: str = "m.room.message", state_key: str | None = None) -> Any:
    return SimpleNamespace(room_id=ROOM, sender=sender, type=event_type, state_key=state_key)


async def test_members_at_the_event_decide_not_the_rooms_current_ones() -> None:
    """An event is decided with the members of its own state group: a message sent while
    a ghost was joined is wanted even when decided after the ghost left (routing behind,
    or a catch-up), one sent after it is not. A message costs a look-up once its group is
    known; a group made by a local state event is derived from its parent."""
    service, users = bridge()
    ghost_key = ("m.room.member", "@ghost_1:localhost")
    joined = {("m.room.member", f"@user{i}:localhost"): EventID(f"$j{i}") for i in range(500)}
    state = GroupState(
        {1: {**joined, ghost_key: EventID("$ghost_join")}},
        {EventID("$ghost_join"): "join", EventID("$ghost_leave"): "leave"},
    )
    subject = AppServiceInterest(SERVER, cast(StateService, state), FakeAliases())
    message = facts("@user1:localhost")
    assert await subject.wanted_at([service], message, 1) == [service]
    users.uses = 0
    for _ in range(1_000):
        assert await subject.wanted_at([service], message, 1) == [service]
    assert users.uses == 1_000 and state.full_reads == 1
    left = NewStateGroup(StateGroupRow(2, ROOM, 2, 1, 1), {ghost_key: EventID("$ghost_leave")})
    leave = facts("@ghost_1:localhost", "m.room.member", "@ghost_1:localhost")
    assert await subject.wanted_at([service], leave, 2, left) == [service]
    assert await subject.wanted_at([service], message, 2) == []
    # Decided late (a routing task behind, a catch-up): still with the ghost.
    assert await subject.wanted_at([service], message, 1) == [service]
    assert state.full_reads == 1


async def test_no_appservice_reads_nothing() -> None:
    """A server without bridges pays nothing per event: not even a new state group's
    members are worked out."""
    state = GroupState({1: {("m.room.member", "@user1:localhost"): EventID("$j")}}, {})
    subject = AppServiceInterest(SERVER, cast(StateService, state), FakeAliases())
    joined = NewStateGroup(StateGroupRow(1, ROOM, 1, None, None), {})
    join = facts("@user1:localhost", "m.room.member", "@user1:localhost")
    assert await subject.wanted_at([], join, 1, joined) == []
    assert state.full_reads == 0


@dataclass
class ChainState:
    """``ROOM``'s state groups as ``StateService`` keeps them: a chain (a group's ID is
    its position), each group's delta holding every key changed since its base group
    (position minus its lowest set bit); counts whole-state reads and events loaded."""

    states: list[dict[tuple[str, str], EventID]]
    memberships: dict[EventID, str]
    full_reads: int = 0
    loaded: int = 0

    def group(self, changes: dict[tuple[str, str], EventID]) -> int:
        """A new group: the last one's state with ``changes``."""
        self.states.append({**self.states[-1], **changes})
        return len(self.states) - 1

    async def state_group_row(self, group: int) -> StateGroupRow:
        return StateGroupRow(group, ROOM, group, group - 1 or None, _base(group) or None)

    async def state_group_deltas(
        self, groups: Iterable[int]
    ) -> dict[int, dict[tuple[str, str], EventID]]:
        return {g: _delta(self.states[_base(g)], self.states[g]) for g in groups}

    async def state_ids_at_group(self, group: int) -> dict[tuple[str, str], EventID]:
        self.full_reads += 1
        return dict(self.states[group])

    async def get_pdus(self, event_ids: Iterable[EventID]) -> dict[EventID, object]:
        wanted = list(event_ids)
        self.loaded += len(wanted)
        return {e: SimpleNamespace(membership=self.memberships[e]) for e in wanted}


def _base(group: int) -> int:
    return group - (group & -group)


def _delta(
    base: dict[tuple[str, str], EventID], state: dict[tuple[str, str], EventID]
) -> dict[tuple[str, str], EventID]:
    return {k: e for k, e in state.items() if base.get(k) != e}


async def test_remote_state_events_cost_the_changed_state() -> None:
    """A state event received over federation, or decided in a catch-up, comes with no
    new group: its group is derived from the nearest kept one before it (the groups of
    events decided by namespace alone, a ghost's leave, are skipped) with the deltas
    between, so a burst of remote joins in a room of 2,000 ghosts loads the changed
    member events only and never reads the whole state (review R4 #1)."""
    service, _ = bridge()
    ghosts = [f"@ghost_{i}:localhost" for i in range(2_000)]
    joined = {("m.room.member", g): EventID(f"$join_{g}") for g in ghosts}
    memberships = {e: "join" for e in joined.values()}
    state = ChainState([{}, {("m.room.create", ""): EventID("$create"), **joined}], memberships)
    subject = AppServiceInterest(SERVER, cast(StateService, state), FakeAliases())
    assert await subject.wanted_at([service], facts("@remote:elsewhere"), 1) == [service]
    assert (state.full_reads, state.loaded) == (1, 2_000)
    state.full_reads = state.loaded = 0
    for j in range(200):
        remote = f"@remote{j}:elsewhere"
        group = state.group({("m.room.member", remote): EventID(f"$join_{remote}")})
        state.memberships[EventID(f"$join_{remote}")] = "join"
        join = facts(remote, "m.room.member", remote)
        assert await subject.wanted_at([service], join, group) == [service]
        assert await subject.wanted_at([service], facts(remote), group) == [service]
        if j % 10 == 9:
            # A ghost leaves: wanted by its namespace, its group's members not needed.
            ghost = ghosts[j]
            group = state.group({("m.room.member", ghost): EventID(f"$leave_{ghost}")})
            state.memberships[EventID(f"$leave_{ghost}")] = "leave"
            leave = facts(ghost, "m.room.member", ghost)
            assert await subject.wanted_at([service], leave, group) == [service]
    # The ghosts' leaves decided since are the only namespace member events loaded.
    assert (state.full_reads, state.loaded) == (0, 19)
    # Every ghost leaves at once (a group resolved over a fork): nobody is left.
    leaves = {("m.room.member", g): EventID(f"$leave_{g}") for g in ghosts}
    state.memberships.update((e, "leave") for e in leaves.values())
    group = state.group(leaves)
    assert await subject.wanted_at([service], facts("@remote0:elsewhere"), group) == []
    assert (state.full_reads, state.loaded) == (0, 2_000)
