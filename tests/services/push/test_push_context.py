"""A room's push evaluation context follows joins, leaves, profile changes, power-level
changes and push-rule changes one member at a time (issue 15: a join must not regroup
every member), and after any sequence of them equals a context built from scratch:
the same local members in the same ruleset groups, display names, member count and
notification levels. The contexts are compared directly (``_context``, ``_build``):
what they hold decides every unread count, and a stale one would miscount silently."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.push_rules.rule import PushRule
from peyvand.events.push_rules.ruleset import Ruleset, build_ruleset
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS
from peyvand.services.push.actions import PushActionsService
from peyvand.services.timeline.room_state import RoomSnapshot
from peyvand.storage.models import StateGroupRow
from peyvand.types import EventID, JsonDict, RoomID, ServerName, UserID

HERE = ServerName("localhost")
ROOM = RoomID("!room:localhost")
VERSION = KNOWN_ROOM_VERSIONS["11"]
LOCAL = [UserID(f"@u{i}:localhost") for i in range(6)]
USERS = [*LOCAL, UserID("@r0:elsewhere"), UserID("@r1:elsewhere")]
MUTE = PushRule("override", "mute", (), ({"kind": "event_match", "key": "type",
                "pattern": "m.room.message"},), None, True)  # fmt: skip


@dataclass
class Room:
    """One room's snapshot and state events, changed as the event writers change them."""

    snapshot: RoomSnapshot
    events: dict[EventID, Pdu] = field(default_factory=dict)

    def set_state(self, event_type: str, state_key: str, content: JsonDict) -> None:
        event_id = EventID(f"${len(self.events)}")
        data = {"type": event_type, "room_id": ROOM, "sender": "@u0:localhost",
                "state_key": state_key, "content": content}  # fmt: skip
        self.events[event_id] = Pdu(data, event_id, VERSION)
        self.snapshot.state[(event_type, state_key)] = event_id
        if event_type == "m.room.member":
            self.snapshot.set_membership(UserID(state_key), str(content["membership"]))

    async def get_room(self, room_id: RoomID) -> RoomSnapshot | None:
        return self.snapshot

    async def get_state_events(
        self, state: Mapping[StateKey, EventID], keys: Iterable[StateKey]
    ) -> dict[StateKey, Pdu]:
        return {k: self.events[state[k]] for k in keys if k in state}


@dataclass
class Rulesets:
    muted: set[str] = field(default_factory=set)
    version: int = 0

    async def get_rulesets(self, user_ids: Iterable[str]) -> dict[str, Ruleset]:
        return {u: build_ruleset(u, [MUTE] if u in self.muted else []) for u in user_ids}


async def _ignored(user_id: UserID) -> frozenset[UserID]:
    return frozenset()


def _service(room: Room, rulesets: Rulesets) -> PushActionsService:
    return PushActionsService(
        HERE,
        cast(Any, None),
        cast(Any, room),
        rulesets,
        cast(Any, None),
        _ignored,
        relations=cast(Any, None),  # no event here relates to another
    )


def _view(context: Any) -> tuple[Any, ...]:
    groups = {compiled: set(members) for compiled, members in context.groups.items()}
    return (
        groups,
        dict(context.display_names),
        context.member_count,
        dict(context.notification_levels),
        {k: e.event_id for k, e in context.auth_state.items()},
    )


ops = st.lists(
    st.one_of(
        st.tuples(st.just("join"), st.sampled_from(USERS), st.sampled_from([None, "Ann", "Bo"])),
        st.tuples(st.just("leave"), st.sampled_from(USERS), st.none()),
        st.tuples(st.just("mute"), st.sampled_from(LOCAL), st.booleans()),
        st.tuples(st.just("power"), st.integers(0, 100), st.none()),
        st.tuples(st.just("evaluate"), st.none(), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(steps=ops)
async def test_the_context_kept_up_to_date_equals_one_built_afresh(
    steps: list[tuple[str, Any, Any]],
) -> None:
    snapshot = RoomSnapshot(ROOM, VERSION, {}, {}, [], 1, StateGroupRow(1, ROOM, 1, None, None))
    room, rulesets = Room(snapshot), Rulesets()
    room.set_state("m.room.create", "", {})
    room.set_state("m.room.power_levels", "", {"notifications": {"room": 50}})
    room.set_state("m.room.member", LOCAL[0], {"membership": "join"})
    service = _service(room, rulesets)
    await service._context(snapshot)
    for op, arg, extra in steps:
        if op == "join":
            content: JsonDict = {"membership": "join"}
            if extra is not None:
                content["displayname"] = extra
            room.set_state("m.room.member", arg, content)
        elif op == "leave":
            room.set_state("m.room.member", arg, {"membership": "leave"})
        elif op == "mute":
            (rulesets.muted.add if extra else rulesets.muted.discard)(arg)
            rulesets.version += 1
        elif op == "power":
            room.set_state("m.room.power_levels", "", {"notifications": {"room": arg}})
        else:
            kept = _view(await service._context(snapshot))
            fresh = _view(await _service(room, rulesets)._build(snapshot))
            assert kept == fresh
    kept = _view(await service._context(snapshot))
    assert kept == _view(await _service(room, rulesets)._build(snapshot))
