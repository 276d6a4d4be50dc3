"""Concurrent changes of the same state converge without anything sent after them.

A user on each server sets ``m.room.name`` at the same moment, twenty times in a row, in a
room created on Peyvand and in one created on the peer (a real Synapse, and a second
Peyvand), of version 12 (state resolution v2.1) and 10 (v2). Both events share their
``prev_events``: the DAG forks, and state resolution (Server-Server API, "Room State
Resolution") must give both servers the same current state, with no message after the
changes to merge the fork. Each round waits until both servers hold both events, then
polls (with a deadline) until their ``/state`` agree.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any
from urllib.parse import quote

import pytest

from harness.client import Account, MatrixClient
from harness.fake_server import FakeServer
from harness.federation import Pair, fake_peer_room, send_accepted
from harness.rooms import say
from harness.server import HomeserverProcess
from harness.sync import sync, wait_until_joined
from harness.timeline import recent_events

ROUNDS = 20
RESET_ROUNDS = 10
BAN_ROUNDS = 2
# Rounds of concurrent renames until the losing one was stored last (FORKS_WANTED times).
FORK_ROUNDS = 16
FORKS_WANTED = 2
ROUND_DEADLINE_SECONDS = 20.0
_txn = itertools.count()


async def _state_ids(client: MatrixClient, account: Account, room_id: str) -> dict[str, str]:
    """The room's current state as ``"type|state_key" -> event ID``."""
    events = (await client.request("GET", f"rooms/{quote(room_id)}/state", token=account)).ok()
    return {f"{e['type']}|{e['state_key']}": e["event_id"] for e in events}


async def _has_events(
    client: MatrixClient, account: Account, room_id: str, event_ids: set[str]
) -> bool:
    events = await recent_events(client, account, room_id, limit=20)
    return event_ids <= {e["event_id"] for e in events}


async def _poll(deadline: float, check: Any) -> bool:
    """Call ``check`` every 100 ms until it holds or the deadline passes."""
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return bool(await check())


async def _shared_room(
    owner_client: MatrixClient,
    owner: Account,
    guest_client: MatrixClient,
    guest: Account,
    room_version: str,
) -> str:
    """A room ``owner`` creates on its server, with ``guest`` (on the other) joined at
    power 100, so both may change any state (from v12 the creator has infinite power and
    may not be listed)."""
    users = {guest.user_id: 100}
    if room_version != "12":
        users[owner.user_id] = 100
    room_id = str(
        (
            await owner_client.request(
                "POST",
                "createRoom",
                json={
                    "name": "start",
                    "invite": [guest.user_id],
                    "room_version": room_version,
                    "power_level_content_override": {"users": users},
                },
                token=owner,
            )
        ).ok()["room_id"]
    )

    answers: list[object] = []

    async def joined() -> bool:
        answer = await guest_client.request("POST", f"join/{quote(room_id)}", json={}, token=guest)
        answers.append(answer.body)
        return answer.status == 200

    assert await _poll(time.monotonic() + 60, joined), f"the guest could not join: {answers[-1]}"

    await wait_until_joined(owner_client, owner, room_id, guest.user_id, attempts=600)
    return room_id


async def _set_state(
    client: MatrixClient, account: Account, room_id: str, event_type: str, content: Any
) -> str:
    sent = await client.request(
        "PUT", f"rooms/{quote(room_id)}/state/{event_type}", json=content, token=account
    )
    return str(sent.ok()["event_id"])


async def _set_name(client: MatrixClient, account: Account, room_id: str, name: str) -> str:
    return await _set_state(client, account, room_id, "m.room.name", {"name": name})


async def _round(
    round_: int, room_id: str, sides: tuple[tuple[MatrixClient, Account], ...]
) -> None:
    """Both servers' users rename the room at once; both servers must end up agreeing
    on the whole state, with one of the two names."""
    sent = set(
        await asyncio.gather(
            *(_set_name(c, a, room_id, f"{round_} by {a.user_id}") for c, a in sides)
        )
    )
    deadline = time.monotonic() + ROUND_DEADLINE_SECONDS

    async def crossed() -> bool:
        return all([await _has_events(c, a, room_id, sent) for c, a in sides])

    assert await _poll(deadline, crossed), f"round {round_}: the changes never crossed"
    states: list[dict[str, str]] = []

    async def agree() -> bool:
        states[:] = [await _state_ids(c, a, room_id) for c, a in sides]
        return all(s == states[0] for s in states)

    assert await _poll(deadline, agree), (
        f"round {round_}: split state, names {[s.get('m.room.name|') for s in states]}"
    )
    assert states[0]["m.room.name|"] in sent


@pytest.mark.parametrize("room_version", ["12", "10"])
@pytest.mark.parametrize("created_on", ["peyvand", "peer"])
async def test_simultaneous_name_changes_converge(
    created_on: str,
    room_version: str,
    pair: Pair,
) -> None:
    peyvand, peyvand_client, _, peer_client, alice, bob = pair.unpack()
    if created_on == "peyvand":
        room_id = await _shared_room(peyvand_client, alice, peer_client, bob, room_version)
    else:
        room_id = await _shared_room(peer_client, bob, peyvand_client, alice, room_version)
    sides = ((peyvand_client, alice), (peer_client, bob))
    for round_ in range(ROUNDS):
        await _round(round_, room_id, sides)
    assert "Unhandled error" not in peyvand.log()


async def _set_join_rule(client: MatrixClient, account: Account, room_id: str, rule: str) -> str:
    return await _set_state(client, account, room_id, "m.room.join_rules", {"join_rule": rule})


async def _join(client: MatrixClient, account: Account, room_id: str) -> bool:
    """Whether ``account`` could join (not: the room was locked first)."""
    answer = await client.request("POST", f"join/{quote(room_id)}", json={}, token=account)
    return answer.status == 200


def _split(states: list[dict[str, str]]) -> dict[str, list[str | None]]:
    """The keys on which the states differ, with each side's event."""
    keys = set().union(*states)
    return {
        k: [s.get(k) for s in states] for k in sorted(keys) if len({s.get(k) for s in states}) > 1
    }


async def _crossed(
    sides: tuple[tuple[MatrixClient, Account], ...], room_id: str, event_ids: set[str]
) -> None:
    """Wait (with a deadline) until both sides hold ``event_ids``."""

    async def crossed() -> bool:
        return all([await _has_events(c, a, room_id, event_ids) for c, a in sides])

    deadline = time.monotonic() + ROUND_DEADLINE_SECONDS
    assert await _poll(deadline, crossed), f"{event_ids} never crossed"


async def _agreed_after(
    sides: tuple[tuple[MatrixClient, Account], ...], room_id: str, event_ids: set[str]
) -> list[dict[str, str]]:
    """Each side's state of the room once both hold ``event_ids`` and agree (or at the
    deadline)."""
    await _crossed(sides, room_id, event_ids)
    return await _agreement(sides, room_id)


async def _agreement(
    readers: tuple[tuple[MatrixClient, Account], ...], room_id: str
) -> list[dict[str, str]]:
    """Each reader's state of the room once they agree (or at the deadline)."""
    states: list[dict[str, str]] = []

    async def agree() -> bool:
        states[:] = [await _state_ids(c, a, room_id) for c, a in readers]
        return all(s == states[0] for s in states)

    await _poll(time.monotonic() + ROUND_DEADLINE_SECONDS, agree)
    return states


@pytest.mark.parametrize("room_version", ["12", "10"])
async def test_a_join_and_a_lock_at_once_converge(room_version: str, pair: Pair) -> None:
    """A new user of Peyvand joins the public room while the peer's admin makes it
    invite-only, at the same moment, until two rounds (of at most ``RESET_ROUNDS``)
    forked. Where the two fork (the join made here before the lock arrived), resolution
    puts the join rules first and the join then fails against them: the joiner's member
    key has no event left (a state reset), on both servers, while the peer soft-fails
    the join it got after its lock. Then the admin opens the room again and a message
    from here cites both forks: against the open join rules the join stands, on both.
    After each step both servers must hold the same whole state."""
    peyvand, peyvand_client, _, peer_client, alice, bob = pair.unpack()
    room_id = await _shared_room(peer_client, bob, peyvand_client, alice, room_version)
    sides = ((peyvand_client, alice), (peer_client, bob))
    await _crossed(sides, room_id, {await _set_join_rule(peer_client, bob, room_id, "public")})
    resets = 0
    for round_ in range(RESET_ROUNDS):
        if resets >= 2:
            break
        joiner = await peyvand_client.register()
        locked, joined = await asyncio.gather(
            _set_join_rule(peer_client, bob, room_id, "invite"),
            _join(peyvand_client, joiner, room_id),
        )
        # The join may never show on the peer (soft-failed there, after the lock), nor
        # here (reset by the lock).
        states = await _agreed_after(sides, room_id, {locked})
        assert all(s == states[0] for s in states), f"round {round_}: split {_split(states)}"
        assert states[0]["m.room.join_rules|"] == locked
        if joined and f"m.room.member|{joiner.user_id}" not in states[0]:
            resets += 1
        public = await _set_join_rule(peer_client, bob, room_id, "public")
        # Not agreed yet: the join is an extremity here, not on the peer.
        await _crossed(sides, room_id, {public})
        sent = await peyvand_client.request(
            "PUT",
            f"rooms/{quote(room_id)}/send/m.room.message/merge{next(_txn)}",
            json={"msgtype": "m.text", "body": f"merge {round_}"},
            token=alice,
        )
        states = await _agreed_after(sides, room_id, {str(sent.ok()["event_id"])})
        assert all(s == states[0] for s in states), f"round {round_}: split {_split(states)}"
        assert states[0]["m.room.join_rules|"] == public
    # The race forks mostly (the join is made here at once, the lock reaches here over
    # federation): a run where it never did would test nothing.
    assert resets >= 1, f"no round of {RESET_ROUNDS} forked into a state reset"
    assert "Unhandled error" not in peyvand.log()


async def _room_with_moderator(
    pair: Pair, room_version: str
) -> tuple[str, Account, tuple[tuple[MatrixClient, Account], ...]]:
    """A public room of the peer's ``bob`` (power 100) with Peyvand's ``alice`` lowered
    to moderator (50: she may kick, he may ban her) and a new Peyvand user joined; the
    room, that user, and who reads each server's state (that user here, bob there)."""
    _, peyvand_client, _, peer_client, alice, bob = pair.unpack()
    room_id = await _shared_room(peer_client, bob, peyvand_client, alice, room_version)
    sides = ((peyvand_client, alice), (peer_client, bob))
    await _crossed(sides, room_id, {await _set_join_rule(peer_client, bob, room_id, "public")})
    member = await peyvand_client.register()
    assert await _poll(
        time.monotonic() + ROUND_DEADLINE_SECONDS,
        lambda: _join(peyvand_client, member, room_id),
    )
    levels = (
        await peer_client.request(
            "GET", f"rooms/{quote(room_id)}/state/m.room.power_levels/", token=bob
        )
    ).ok()
    levels["users"][alice.user_id] = 50
    lowered = await _set_state(peyvand_client, alice, room_id, "m.room.power_levels", levels)
    await _crossed(sides, room_id, {lowered})
    return room_id, member, ((peyvand_client, member), (peer_client, bob))


def _section_state(room: dict[str, Any]) -> dict[str, str]:
    """A /sync room's ``state_after`` as ``"type|state_key" -> event ID``."""
    return {f"{e['type']}|{e['state_key']}": e["event_id"] for e in room["state_after"]["events"]}


@pytest.mark.parametrize("room_version", ["12", "10"])
async def test_a_ban_and_a_kick_at_once_converge(room_version: str, pair: Pair) -> None:
    """The peer's admin bans Peyvand's moderator while she kicks a member, at the same
    moment. Where the two fork, resolution orders the ban (the higher power) first and
    the kick then fails: the member's key goes back to their join, an older event, on
    both servers. Both servers must hold the same whole state, and Peyvand must count
    the member in the room (``joined_rooms``, a fresh /sync) exactly when that state
    says they joined. A client of the member's that layers each /sync's ``state_after``
    (v1.16 ``use_state_after``) over the last must hold that state too: a kick undone
    is in its timeline, and only ``state_after`` can tell it was."""
    peyvand, peyvand_client, _, peer_client, alice, bob = pair.unpack()
    undone = 0
    for round_ in range(BAN_ROUNDS):
        room_id, member, readers = await _room_with_moderator(pair, room_version)
        before = await sync(peyvand_client, member, use_state_after="true")
        held = _section_state(before["rooms"]["join"][room_id])
        banned, kicked = await asyncio.gather(
            peer_client.request(
                "POST", f"rooms/{quote(room_id)}/ban", json={"user_id": alice.user_id}, token=bob
            ),
            peyvand_client.request(
                "POST",
                f"rooms/{quote(room_id)}/kick",
                json={"user_id": member.user_id},
                token=alice,
            ),
        )
        assert (banned.status, kicked.status) == (200, 200), (banned.body, kicked.body)
        states = await _agreement(readers, room_id)
        assert all(s == states[0] for s in states), f"round {round_}: split {_split(states)}"
        membership = (
            await peyvand_client.request(
                "GET",
                f"rooms/{quote(room_id)}/state/m.room.member/{quote(member.user_id)}",
                token=member,
            )
        ).ok()["membership"]
        joined = (await peyvand_client.request("GET", "joined_rooms", token=member)).ok()[
            "joined_rooms"
        ]
        fresh = await sync(peyvand_client, member)
        assert (room_id in joined) == (membership == "join"), (round_, membership, joined)
        assert (room_id in fresh["rooms"]["join"]) == (membership == "join"), round_
        undone += membership == "join"
        later = await sync(
            peyvand_client, member, since=before["next_batch"], use_state_after="true"
        )
        section = "join" if membership == "join" else "leave"
        held.update(_section_state(later["rooms"][section][room_id]))
        assert held == states[0], f"round {round_}: {_split([held, states[0]])}"
    # The ban is made there at once and the kick here: they fork nearly always.
    assert undone >= 1, f"no round of {BAN_ROUNDS} undid the kick"
    assert "Unhandled error" not in peyvand.log()


async def test_a_sync_after_a_fork_continues_from_the_resolved_state(pair: Pair) -> None:
    """Both users rename the room at once; where the two fork and Peyvand holds the
    losing rename last, the newest event's own state (its side of the fork) is not the
    state Peyvand's client was given (``state_after``: the resolved one). The next
    incremental /sync, after a message, must continue from what the client holds: no
    state changed, so its ``state_after`` is empty; from the newest event's side it
    would send the name again. Layered over the first response, the sections hold the
    room's state as ``/state`` tells it."""
    peyvand, peyvand_client, _, peer_client, alice, bob = pair.unpack()
    room_id = await _shared_room(peyvand_client, alice, peer_client, bob, "12")
    sides = ((peyvand_client, alice), (peer_client, bob))
    first = await sync(peyvand_client, alice, use_state_after="true")
    held = _section_state(first["rooms"]["join"][room_id])
    since = first["next_batch"]
    forks = 0
    for round_ in range(FORK_ROUNDS):
        # The peer's first, then Alice's at once: hers is the later (resolution orders
        # the two by origin_server_ts and applies the later last) and made, mostly,
        # before the peer's reaches Peyvand, which then stores the loser last.
        theirs = await _set_name(peer_client, bob, room_id, f"{round_} by bob")
        mine = await _set_name(peyvand_client, alice, room_id, f"{round_} by alice")
        sent = {theirs, mine}
        states = await _agreed_after(sides, room_id, sent)
        assert all(s == states[0] for s in states), f"round {round_}: split {_split(states)}"
        winner = states[0]["m.room.name|"]
        renamed = await sync(peyvand_client, alice, since=since, use_state_after="true")
        room = renamed["rooms"]["join"][room_id]
        assert _section_state(room)["m.room.name|"] == winner, round_
        held.update(_section_state(room))
        timeline = [e["event_id"] for e in room["timeline"]["events"]]
        forks += sent <= set(timeline) and timeline[-1] != winner
        await say(peyvand_client, room_id, alice, f"after round {round_}")
        talked = await sync(
            peyvand_client, alice, since=renamed["next_batch"], use_state_after="true"
        )
        assert talked["rooms"]["join"][room_id]["state_after"] == {"events": []}, (
            f"round {round_}: the loser {timeline[-1]} was newest, the winner {winner}"
        )
        since = talked["next_batch"]
        assert held == await _state_ids(peyvand_client, alice, room_id), round_
        if forks >= FORKS_WANTED:
            break
    # Renames at once, the peer's reaching Peyvand after Alice's is stored: a loser held
    # last in about half the rounds.
    assert forks >= 1, f"no round of {FORK_ROUNDS} held the losing rename last"
    assert "Unhandled error" not in peyvand.log()


async def test_state_after_continues_from_the_resolved_state_of_a_fork(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient, fake: FakeServer
) -> None:
    """A fake peer's rename, on its side of a fork and older than Alice's concurrent one,
    reaches Peyvand after hers: resolution keeps Alice's (the later), and Peyvand stores
    the losing rename last. Alice's client was given the resolved name (``state_after``);
    the next incremental /sync, after a message, changed no state and must say so, not
    send the name again from the losing event's side."""
    alice, bob, room_id, _ = await fake_peer_room(peyvand_client, fake, "renamer", "12")
    levels = (
        await peyvand_client.request(
            "GET", f"rooms/{quote(room_id)}/state/m.room.power_levels", token=alice
        )
    ).ok()
    levels["users"][bob] = 100
    await _set_state(peyvand_client, alice, room_id, "m.room.power_levels", levels)
    await fake.wait_for_pdu(
        lambda p: (
            p.get("type") == "m.room.power_levels" and bob in p.get("content", {}).get("users", {})
        )
    )
    first = await sync(peyvand_client, alice, use_state_after="true")
    theirs = fake.make_pdu(
        None,
        room_id,
        bob,
        "m.room.name",
        {"name": "theirs"},
        "",
        prev_events=list(fake.rooms[room_id].extremities),
    )
    await asyncio.sleep(0.01)  # Alice's rename is the later: resolution applies it last
    mine = await _set_name(peyvand_client, alice, room_id, "mine")
    await send_accepted(fake, theirs)
    renamed: dict[str, Any] = {}

    async def stored() -> bool:
        renamed.update(
            await sync(peyvand_client, alice, since=first["next_batch"], use_state_after="true")
        )
        return theirs.event_id in _timeline(renamed, room_id)

    assert await _poll(time.monotonic() + ROUND_DEADLINE_SECONDS, stored), "never stored"
    room = renamed["rooms"]["join"][room_id]
    assert _timeline(renamed, room_id)[-2:] == [mine, theirs.event_id]
    assert _section_state(room)["m.room.name|"] == mine
    assert (await _state_ids(peyvand_client, alice, room_id))["m.room.name|"] == mine

    await say(peyvand_client, room_id, alice, "after the fork")
    talked = await sync(peyvand_client, alice, since=renamed["next_batch"], use_state_after="true")
    assert talked["rooms"]["join"][room_id]["state_after"] == {"events": []}
    assert "Unhandled error" not in peyvand.log()


def _timeline(response: dict[str, Any], room_id: str) -> list[str]:
    room = response["rooms"]["join"].get(room_id, {})
    return [e["event_id"] for e in room.get("timeline", {}).get("events", [])]
