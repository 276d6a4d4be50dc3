"""The classic state resolution cases (after Synapse's ``tests/state/test_v2.py``), for
room versions 10 and 11 (v2) and 12 (v2.1), where they agree.

Each case is a short DAG; the assertion is on the state at ``END``, restricted to the keys
that changed since ``START`` (see ``RoomDag.changed_at_end``).
"""

from __future__ import annotations

import pytest

from harness.state_res_dag import (
    ALICE,
    ALL_VERSIONS,
    BOB,
    CHARLIE,
    EVELYN,
    Node,
    RoomDag,
    join_rules,
    member,
    message,
    power,
    topic,
)
from peyvand.events.room_versions import RoomVersion

pytestmark = pytest.mark.parametrize("version", ALL_VERSIONS, ids=lambda v: f"v{v.identifier}")


def check(version: RoomVersion, nodes: list[Node], edges: list[str], expected: list[str]) -> None:
    room = RoomDag(version, nodes, edges)
    assert room.changed_at_end(expected) == room.expected(expected)


def test_ban_vs_power_levels_race(version: RoomVersion) -> None:
    """Alice bans Bob while Bob, on another branch, re-sends the power levels: the ban,
    sent by the more powerful user, is applied first and Bob's event then fails."""
    nodes = [
        power("PA", ALICE, {ALICE: 100, BOB: 50}),
        member("MA", ALICE, ALICE, "join"),
        member("MB", ALICE, BOB, "ban"),
        power("PB", BOB, {ALICE: 100, BOB: 50}),
    ]
    edges = ["END MB MA PA START", "END PB PA"]
    check(version, nodes, edges, ["PA", "MA", "MB"])


def test_join_rules_evasion(version: RoomVersion) -> None:
    """Evelyn joins on a branch where the room is still public; the join rules change to
    invite is a power event, applied first, so her join fails."""
    nodes = [join_rules("JR", ALICE, "invite"), member("ME", EVELYN, EVELYN, "join")]
    edges = ["END JR START", "END ME START"]
    check(version, nodes, edges, ["JR"])


def test_offtopic_power_levels(version: RoomVersion) -> None:
    """A chain of power levels changes against an older one: the newest valid one wins."""
    nodes = [
        power("PA", ALICE, {ALICE: 100, BOB: 50}),
        power("PB", BOB, {ALICE: 100, BOB: 50, CHARLIE: 50}),
        power("PC", CHARLIE, {ALICE: 100, BOB: 50, CHARLIE: 0}),
    ]
    edges = ["END PC PB PA START", "END PA"]
    check(version, nodes, edges, ["PC"])


def test_topic_basic(version: RoomVersion) -> None:
    """Bob's topic, sent while he had power on a branch Alice's demotion overrides, loses."""
    nodes = [
        topic("T1", ALICE),
        power("PA1", ALICE, {ALICE: 100, BOB: 50}),
        topic("T2", ALICE),
        power("PA2", ALICE, {ALICE: 100, BOB: 0}),
        power("PB", BOB, {ALICE: 100, BOB: 50}),
        topic("T3", BOB),
    ]
    edges = ["END PA2 T2 PA1 T1 START", "END T3 PB PA1"]
    check(version, nodes, edges, ["PA2", "T2"])


def test_topic_reset(version: RoomVersion) -> None:
    """Bob is banned after setting a topic; merging with an older branch resets the topic
    to the one from before his, since his topic now fails auth."""
    nodes = [
        topic("T1", ALICE),
        power("PA", ALICE, {ALICE: 100, BOB: 50}),
        topic("T2", BOB),
        member("MB", ALICE, BOB, "ban"),
    ]
    edges = ["END MB T2 PA T1 START", "END T1"]
    check(version, nodes, edges, ["T1", "MB", "PA"])


def test_topic(version: RoomVersion) -> None:
    """A longer topic race across a message event and a merge."""
    nodes = [
        topic("T1", ALICE),
        power("PA1", ALICE, {ALICE: 100, BOB: 50}),
        topic("T2", ALICE),
        power("PA2", ALICE, {ALICE: 100, BOB: 0}),
        power("PB", BOB, {ALICE: 100, BOB: 50}),
        topic("T3", BOB),
        message("MZ1", "@zara:example.com"),
        topic("T4", ALICE),
    ]
    edges = ["END T4 MZ1 PA2 T2 PA1 T1 START", "END MZ1 T3 PB PA1"]
    check(version, nodes, edges, ["T4", "PA2"])


def test_mainline_sort(version: RoomVersion) -> None:
    """T3 wins although T4 is newer: T4 is based on an older power levels event (PB's
    ancestor PA1) than T3 (PA2), and mainline ordering applies later-based events last."""
    nodes = [
        topic("T1", ALICE),
        power("PA1", ALICE, {ALICE: 100, BOB: 50}),
        topic("T2", ALICE),
        power("PA2", ALICE, {ALICE: 100, BOB: 50}, events={"m.room.power_levels": 100}),
        power("PB", BOB, {ALICE: 100, BOB: 50}),
        topic("T3", BOB),
        topic("T4", ALICE),
    ]
    edges = ["END T3 PA2 T2 PA1 T1 START", "END T4 PB PA1"]
    check(version, nodes, edges, ["T3", "PA2"])


def test_concurrent_joins_merge(version: RoomVersion) -> None:
    """Two users joining a public room on two branches are both members afterwards."""
    nodes = [
        member("ME", EVELYN, EVELYN, "join"),
        member("MF", "@fred:example.com", "@fred:example.com", "join"),
    ]
    edges = ["END ME START", "END MF START"]
    check(version, nodes, edges, ["ME", "MF"])
