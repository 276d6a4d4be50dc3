"""State resolution v1 ("Room Version 1", "State resolution") on small known examples."""

from __future__ import annotations

import hashlib
from typing import Any

from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.room_versions import ROOM_V1, ROOM_V2
from peyvand.events.state_res import resolve_state
from peyvand.types import EventID

ALICE = "@alice:example.com"
BOB = "@bob:example.com"
ROOM = "!room:example.com"
POWER: StateKey = ("m.room.power_levels", "")
TOPIC: StateKey = ("m.room.topic", "")


class Room:
    """Events of one v1 room, by name (event ID ``$<name>:example.com``)."""

    def __init__(self) -> None:
        self.events: dict[EventID, Pdu] = {}
        self.base: dict[StateKey, EventID] = {}
        self.add("create", "m.room.create", ALICE, {"creator": ALICE}, "", depth=1)
        self.add("ajoin", "m.room.member", ALICE, {"membership": "join"}, ALICE, depth=2)
        self.add("pl", "m.room.power_levels", ALICE, {"users": {ALICE: 100, BOB: 50}}, "", 3)
        self.add("jr", "m.room.join_rules", ALICE, {"join_rule": "public"}, "", depth=4)
        self.add("bjoin", "m.room.member", BOB, {"membership": "join"}, BOB, depth=5)

    def add(
        self,
        name: str,
        event_type: str,
        sender: str,
        content: dict[str, Any],
        state_key: str,
        depth: int,
        *,
        base: bool = True,
    ) -> EventID:
        event_id = EventID(f"${name}:example.com")
        data = {
            "event_id": event_id,
            "type": event_type,
            "room_id": ROOM,
            "sender": sender,
            "content": content,
            "state_key": state_key,
            "depth": depth,
            "prev_events": [],
            "auth_events": [],
            "signatures": {"example.com": {"ed25519:k": "s"}},
        }
        pdu = Pdu(data, event_id, ROOM_V1)
        self.events[event_id] = pdu
        if base:
            self.base[pdu.state_tuple] = event_id
        return event_id

    def fork(self, **events: EventID) -> dict[StateKey, EventID]:
        state = dict(self.base)
        for event_id in events.values():
            state[self.events[event_id].state_tuple] = event_id
        return state

    def resolve(self, *state_sets: dict[StateKey, EventID]) -> dict[StateKey, EventID]:
        return resolve_state(ROOM_V1, list(state_sets), self.events)


def test_a_key_only_one_set_has_is_not_a_conflict() -> None:
    room = Room()
    topic = room.add("topic", "m.room.topic", BOB, {"topic": "t"}, "", 6, base=False)
    resolved = room.resolve(room.fork(), room.fork(t=topic))
    assert resolved == {**room.base, TOPIC: topic}


def test_power_levels_later_allowed_event_wins() -> None:
    room = Room()
    a = room.add("pla", "m.room.power_levels", ALICE, {"users": {ALICE: 100}}, "", 6, base=False)
    b = room.add(
        "plb", "m.room.power_levels", ALICE, {"users": {ALICE: 100, BOB: 10}}, "", 7, base=False
    )
    assert room.resolve(room.fork(p=a), room.fork(p=b))[POWER] == b


def test_power_levels_pass_stops_at_the_first_disallowed_event() -> None:
    room = Room()
    # Alice demotes Bob (depth 6); Bob, concurrently, raises himself (depth 7): after
    # Alice's event Bob (0) may not send power levels, so the pass stops at Alice's.
    demote = room.add(
        "demote", "m.room.power_levels", ALICE, {"users": {ALICE: 100}}, "", 6, base=False
    )
    grab = room.add(
        "grab",
        "m.room.power_levels",
        BOB,
        {"users": {ALICE: 100, BOB: 50}, "ban": 40},
        "",
        7,
        base=False,
    )
    assert room.resolve(room.fork(p=demote), room.fork(p=grab))[POWER] == demote


def test_same_depth_orders_by_descending_sha1() -> None:
    room = Room()
    ids = [
        room.add(
            name,
            "m.room.power_levels",
            ALICE,
            {"users": {ALICE: 100}, "kick": n},
            "",
            6,
            base=False,
        )
        for n, name in enumerate(["x1", "x2", "x3"])
    ]
    # All allowed: the last in order (lowest sha1) wins.
    lowest = min(ids, key=lambda e: hashlib.sha1(e.encode()).hexdigest())
    assert room.resolve(*(room.fork(p=e) for e in ids))[POWER] == lowest


def test_other_conflicts_take_the_deepest_allowed_event() -> None:
    room = Room()
    # Alice took Bob's power away; his later topic is not allowed in R, Alice's earlier is.
    room.base[POWER] = room.add(
        "pl2", "m.room.power_levels", ALICE, {"users": {ALICE: 100}, "state_default": 50}, "", 6
    )
    alice_topic = room.add("ta", "m.room.topic", ALICE, {"topic": "a"}, "", 7, base=False)
    bob_topic = room.add("tb", "m.room.topic", BOB, {"topic": "b"}, "", 9, base=False)
    assert room.resolve(room.fork(t=alice_topic), room.fork(t=bob_topic))[TOPIC] == alice_topic
    # With his power back, the deeper topic wins.
    room.base[POWER] = room.events[EventID("$pl:example.com")].event_id
    assert room.resolve(room.fork(t=alice_topic), room.fork(t=bob_topic))[TOPIC] == bob_topic


def test_version_2_rooms_use_state_res_v2() -> None:
    room = Room()
    alice_topic = room.add("ta", "m.room.topic", ALICE, {"topic": "a"}, "", 7, base=False)
    bob_topic = room.add("tb", "m.room.topic", BOB, {"topic": "b"}, "", 9, base=False)
    forks = [room.fork(t=alice_topic), room.fork(t=bob_topic)]
    # v1: the deeper topic. v2: same mainline, so the later origin_server_ts (Alice's).
    assert room.resolve(*forks)[TOPIC] == bob_topic
    events = {
        e: Pdu({**p.data, "origin_server_ts": 2 if e == alice_topic else 1}, e, ROOM_V2)
        for e, p in room.events.items()
    }
    assert resolve_state(ROOM_V2, forks, events)[TOPIC] == alice_topic
