"""Partial-state joins ("faster joins", MSC3706 / MSC3902; Server-Server API, send_join v2
with ``omit_members``).

Peyvand joins a room of a real Synapse with about 50 members: the send_join answer omits
the member events, so the room is partial here; the user sends and reads at once, the full
state arrives in the background, after which ``/joined_members`` lists every member and
messages flow both ways. Two Peyvands, each resident in turn, answer each other's
``omit_members`` join with members omitted. A fake resident server that refuses
``/state_ids`` for a while keeps the room partial across a restart of Peyvand: the resync
resumes at start-up; when it refuses for good, another of ``servers_in_room`` serves.
Peyvand as the resident answers ``omit_members`` as the spec says (Synapse joins that
way and completes its state from Peyvand), and ``make_join`` without ``ver`` means room
version 1.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from harness.client import Account, MatrixClient, new_session
from harness.fake_server import FakeRequest, FakeRoom, FakeServer, q
from harness.partial_state import (
    auth_closure,
    fake_members,
    host_partial_room,
    join_partially,
    join_via,
)
from harness.rooms import say
from harness.server import HomeserverProcess
from harness.synapse import SynapseProcess
from harness.sync import sync
from harness.timeline import message_bodies
from peyvand.events.pdu import Pdu

TIMEOUT_SECONDS = 120
SYNAPSE_MEMBERS = 50
FAKE_MEMBERS = 12
PEYVAND_MEMBERS = 8
_txn = itertools.count()


async def _wait_for_body(client: MatrixClient, account: Account, room_id: str, body: str) -> None:
    """Wait until the room shows ``body`` (at most ``TIMEOUT_SECONDS``)."""
    for _ in range(TIMEOUT_SECONDS * 5):
        if body in await message_bodies(client, account, room_id, 100):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{body!r} never arrived")


async def _joined(client: MatrixClient, account: Account, room_id: str) -> set[str]:
    answer = await client.request("GET", f"rooms/{quote(room_id)}/joined_members", token=account)
    return set(answer.ok()["joined"])


async def _join_via(client: MatrixClient, account: Account, room_id: str, server_name: str) -> None:
    """``account`` joins ``room_id`` through ``server_name``; anything but 200 fails."""
    status, answer = await join_via(client, account, room_id, server_name)
    assert status == 200, f"expected 200, got {status}: {answer}"


async def _public_room(client: MatrixClient, members: Sequence[Account]) -> str:
    """A public room created by ``members[0]`` and joined by the others: its id."""
    created = await client.request(
        "POST", "createRoom", json={"preset": "public_chat"}, token=members[0]
    )
    room_id = str(created.ok()["room_id"])
    for member in members[1:]:
        (await client.request("POST", f"join/{quote(room_id)}", json={}, token=member)).ok()
    return room_id


def _log_since_last_start(server: HomeserverProcess) -> str:
    log = server.log()
    return log[log.rfind("--- starting peyvand serve") :]


async def _synapse_room(
    synapse: SynapseProcess, client: MatrixClient, members: int
) -> tuple[str, list[Account]]:
    """A public room on Synapse with ``members`` joined users (its creator first)."""
    creator = await synapse.register_user()
    created = await client.request(
        "POST", "createRoom", json={"preset": "public_chat", "name": "partial"}, token=creator
    )
    room_id = str(created.ok()["room_id"])
    others: list[Account] = []
    for start in range(0, members - 1, 10):
        size = min(10, members - 1 - start)
        batch = await asyncio.gather(*(synapse.register_user() for _ in range(size)))
        joins = await asyncio.gather(
            *(client.request("POST", f"join/{quote(room_id)}", json={}, token=u) for u in batch)
        )
        for answer in joins:
            answer.ok()
        others += batch
    return room_id, [creator, *others]


async def test_join_a_synapse_room_with_partial_state(
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    synapse: SynapseProcess,
    synapse_client: MatrixClient,
) -> None:
    async with asyncio.timeout(TIMEOUT_SECONDS):
        room_id, members = await _synapse_room(synapse, synapse_client, SYNAPSE_MEMBERS)
        bob = members[0]
        alice = await peyvand_client.register()

        started = time.monotonic()
        await _join_via(peyvand_client, alice, room_id, synapse.server_name)
        # At once: the user sends and reads.
        sent = await say(peyvand_client, room_id, alice, "hello from a partial room")
        event = await peyvand_client.request(
            "GET", f"rooms/{quote(room_id)}/event/{quote(sent)}", token=alice
        )
        assert event.ok()["content"]["body"] == "hello from a partial room"
        assert "hello from a partial room" in await message_bodies(
            peyvand_client, alice, room_id, 100
        )
        lazy = json.dumps({"room": {"state": {"lazy_load_members": True}}})
        synced = await sync(peyvand_client, alice, filter=lazy)
        timeline = synced["rooms"]["join"][room_id]["timeline"]["events"]
        assert sent in [e["event_id"] for e in timeline]
        usable_after = time.monotonic() - started
        assert f"joined {room_id} with partial state" in peyvand.log()

        # /joined_members waits for the full state, then lists everyone.
        joined = await _joined(peyvand_client, alice, room_id)
        assert joined == {m.user_id for m in members} | {alice.user_id}
        assert f"{room_id} has its full state" in peyvand.log()
        # Nothing kept while the state was partial outlives it (the summary, for one).
        summary = (await sync(peyvand_client, alice, filter=lazy))["rooms"]["join"][room_id]
        assert summary["summary"]["m.joined_member_count"] == SYNAPSE_MEMBERS + 1

        # Both ways.
        await _wait_for_body(synapse_client, bob, room_id, "hello from a partial room")
        await say(synapse_client, room_id, bob, "hello from synapse")
        await _wait_for_body(peyvand_client, alice, room_id, "hello from synapse")
        await say(peyvand_client, room_id, alice, "after the resync")
        await _wait_for_body(synapse_client, members[-1], room_id, "after the resync")
    assert usable_after < 5
    assert "Unhandled error" not in peyvand.log()


@pytest.mark.parametrize(
    "resident_is_peer", [True, False], ids=["peer-resident", "peyvand-resident"]
)
async def test_peyvand_joins_peyvand_with_partial_state(
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    peyvand_peer: HomeserverProcess,
    resident_is_peer: bool,
) -> None:
    """Each Peyvand answers the other's ``omit_members`` join with members omitted; the
    joiner's room is partial, then complete."""
    async with new_session() as session:
        peer_client = MatrixClient(session, peyvand_peer.base_url)
        resident, resident_client, joiner, joiner_client = (
            (peyvand_peer, peer_client, peyvand, peyvand_client)
            if resident_is_peer
            else (peyvand, peyvand_client, peyvand_peer, peer_client)
        )
        async with asyncio.timeout(TIMEOUT_SECONDS):
            residents = [await resident_client.register() for _ in range(PEYVAND_MEMBERS)]
            room_id = await _public_room(resident_client, residents)
            carol = await joiner_client.register()
            await _join_via(joiner_client, carol, room_id, resident.server_name)
            await say(joiner_client, room_id, carol, "from the joiner")
            assert f"joined {room_id} with partial state" in joiner.log()
            everyone = {m.user_id for m in residents} | {carol.user_id}
            assert await _joined(joiner_client, carol, room_id) == everyone
            assert f"{room_id} has its full state" in joiner.log()
            await _wait_for_body(resident_client, residents[-1], room_id, "from the joiner")
            await say(resident_client, room_id, residents[0], "from the resident")
            await _wait_for_body(joiner_client, carol, room_id, "from the resident")
    assert "Unhandled error" not in joiner.log()
    assert "Unhandled error" not in resident.log()


def _host_room(
    fake: FakeServer,
    members: int,
    others: Sequence[FakeServer] = (),
    *,
    junk_servers: Sequence[Any] = (),
) -> tuple[FakeRoom, dict[str, bool]]:
    """A room of the fake server (version 10) with ``members`` of its users joined, served
    as a resident server does: make_join, send_join omitting members (MSC3706), /event; and
    /state_ids only while ``gate["open"]``. ``others`` are in ``servers_in_room`` too and
    serve /event and /state_ids for the room, ungated; ``junk_servers`` follow them there."""
    hosted = host_partial_room(
        fake,
        f"!partial{next(_txn)}:{fake.server_name}",
        members,
        "partial on a fake",
        servers_in_room=[*(o.server_name for o in others), *junk_servers],
        with_auth_chain=True,
    )
    gate = {"open": False}

    def state_ids(request: FakeRequest) -> tuple[int, Any]:
        if not gate["open"]:
            return 500, {"errcode": "M_UNKNOWN", "error": "not now"}
        return hosted.state_ids(request)

    fake.on("GET", "/_matrix/federation/v1/state_ids/{room_id}", state_ids)
    for other in others:
        other.events = fake.events  # the same room, the same events
        other.on("GET", "/_matrix/federation/v1/state_ids/{room_id}", hosted.state_ids)
    return hosted.room, gate


async def test_a_restart_during_partial_state_resumes_the_resync(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient, fake: FakeServer
) -> None:
    room, gate = _host_room(fake, FAKE_MEMBERS)
    async with asyncio.timeout(TIMEOUT_SECONDS):
        alice = await join_partially(peyvand, peyvand_client, fake, room)
        await say(peyvand_client, room.room_id, alice, "sent while partial")
        await fake.wait_for_pdu(lambda p: p.get("content", {}).get("body") == "sent while partial")
        # A member whose join the partial state lacks speaks: authorised by its auth
        # events (fetched), neither rejected nor soft-failed against the partial state.
        speaker = fake.user("member3")
        spoken = fake.make_pdu(
            None, room.room_id, speaker, "m.room.message", {"msgtype": "m.text", "body": "hi"}
        )
        status, answer = await fake.send_pdus([spoken])
        assert (status, answer["pdus"]) == (200, {spoken.event_id: {}})
        await _wait_for_body(peyvand_client, alice, room.room_id, "hi")
        # While partial, Peyvand is no resident: it neither takes joins nor serves state.
        status, answer = await fake.make_join(room.room_id, fake.user("latecomer"))
        assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")
        status, answer = await fake.request(
            "GET",
            f"/_matrix/federation/v1/state_ids/{q(room.room_id)}",
            query={"event_id": spoken.event_id},
        )
        assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")
        # The resident refuses /state_ids: the room stays partial, through a crash.
        for _ in range(TIMEOUT_SECONDS * 10):
            if fake.requests("GET", "/_matrix/federation/v1/state_ids/"):
                break
            await asyncio.sleep(0.1)
        await asyncio.to_thread(peyvand.kill_and_restart)
        gate["open"] = True
        joined = await _joined(peyvand_client, alice, room.room_id)
        assert joined == fake_members(fake, FAKE_MEMBERS) | {alice.user_id}
    assert f"{room.room_id} has its full state" in _log_since_last_start(peyvand)
    assert await message_bodies(peyvand_client, alice, room.room_id, 100) == [
        "sent while partial",
        "hi",
    ]
    assert f"while {room.room_id} was partial, fails against" not in peyvand.log()


async def test_send_join_with_omit_members_answers_partial_state(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient, fake: FakeServer
) -> None:
    """Peyvand as the resident: ``omit_members`` leaves out member events but the heroes'
    of an unnamed room (the spec's "omit_members"), keeps the auth chain free of events
    already in the state, and names the servers in the room."""
    owner = await peyvand_client.register()
    room_id = str(
        (
            await peyvand_client.request(
                "POST", "createRoom", json={"preset": "public_chat"}, token=owner
            )
        ).ok()["room_id"]
    )
    others = [await peyvand_client.register() for _ in range(6)]
    for member in others:
        (await peyvand_client.request("POST", f"join/{quote(room_id)}", json={}, token=member)).ok()
    joiner = fake.user(f"joiner{next(_txn)}")
    status, template = await fake.make_join(room_id, joiner)
    assert status == 200, template
    join = fake.join_event(template)
    status, answer = await fake.request(
        "PUT",
        f"/_matrix/federation/v2/send_join/{q(room_id)}/{q(join.event_id)}",
        dict(join.data),
        query={"omit_members": "true"},
    )
    assert status == 200, answer
    assert answer["members_omitted"] is True
    assert answer["servers_in_room"] == [peyvand.server_name]
    members = sorted(e["state_key"] for e in answer["state"] if e["type"] == "m.room.member")
    # The room has no name nor alias: its heroes' (the first five others) are kept.
    assert members == sorted([owner.user_id, *(m.user_id for m in others)])[:5]
    assert {e["type"] for e in answer["state"]} >= {"m.room.create", "m.room.power_levels"}
    state_ids = {fake.remember(e, join.room_version).event_id for e in answer["state"]}
    chain_ids = {fake.remember(e, join.room_version).event_id for e in answer["auth_chain"]}
    assert not state_ids & chain_ids


async def test_make_join_without_ver_means_room_version_1(
    peyvand_client: MatrixClient, fake: FakeServer
) -> None:
    owner = await peyvand_client.register()
    rooms = {}
    for version in ("1", "12"):
        created = await peyvand_client.request(
            "POST",
            "createRoom",
            json={"preset": "public_chat", "room_version": version},
            token=owner,
        )
        rooms[version] = str(created.ok()["room_id"])
    joiner = fake.user(f"joiner{next(_txn)}")

    def path(room_id: str) -> str:
        return (
            f"/_matrix/federation/v1/make_join/{quote(room_id, safe='')}/{quote(joiner, safe='')}"
        )

    status, answer = await fake.request("GET", path(rooms["1"]))
    assert (status, answer["room_version"]) == (200, "1")
    status, answer = await fake.request("GET", path(rooms["12"]))
    assert (status, answer["errcode"]) == (400, "M_INCOMPATIBLE_ROOM_VERSION")


async def test_the_resync_falls_back_to_the_other_servers_in_the_room(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient, fake: FakeServer, tmp_path: Path
) -> None:
    """The server joined through refuses ``/state_ids``; another of ``servers_in_room``
    gives the full state."""
    (tmp_path / "other").mkdir()
    async with FakeServer(tmp_path / "other", peer=peyvand.server_name) as other:
        room, _ = _host_room(fake, FAKE_MEMBERS, [other])
        alice = await peyvand_client.register()
        async with asyncio.timeout(TIMEOUT_SECONDS):
            await _join_via(peyvand_client, alice, room.room_id, fake.server_name)
            joined = await _joined(peyvand_client, alice, room.room_id)
    assert joined == fake_members(fake, FAKE_MEMBERS) | {alice.user_id}
    assert other.requests("GET", "/_matrix/federation/v1/state_ids/")
    log = peyvand.log()
    assert f"resync of {room.room_id} from {fake.server_name} failed" in log
    assert f"{room.room_id} has its full state (17 events, from {other.server_name})" in log


async def test_synapse_joins_peyvand_with_partial_state(
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    synapse: SynapseProcess,
    synapse_client: MatrixClient,
) -> None:
    """Synapse asks ``omit_members``; Peyvand's answer makes its room partial there, and
    Synapse's resync from Peyvand (``/state_ids``, ``/state``) completes it."""
    residents = [await peyvand_client.register() for _ in range(PEYVAND_MEMBERS)]
    async with asyncio.timeout(TIMEOUT_SECONDS):
        room_id = await _public_room(peyvand_client, residents)
        bob = await synapse_client.register()
        await _join_via(synapse_client, bob, room_id, peyvand.server_name)
        everyone = {m.user_id for m in residents} | {bob.user_id}
        assert await _joined(synapse_client, bob, room_id) == everyone
    log = synapse.log()
    assert f"Syncing state for room {room_id}" in log
    assert "omit_members=true" in log


def _raise_to_50(fake: FakeServer, room: FakeRoom, user: str) -> Pdu:
    """The creator's power levels giving ``user`` 50, tracked by the fake."""
    creator = fake.user("creator")
    raised = fake.make_pdu(
        None, room.room_id, creator, "m.room.power_levels", {"users": {creator: 100, user: 50}}, ""
    )
    fake.track(raised)
    return raised


async def _state_content(
    client: MatrixClient, account: Account, room_id: str, event_type: str
) -> Any:
    path = f"rooms/{quote(room_id)}/state/{event_type}/"
    return (await client.request("GET", path, token=account)).ok()


async def test_a_demoted_member_cannot_cite_its_old_power_while_partial(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient, fake: FakeServer
) -> None:
    """While the state is partial, step 5 checks a received event against the resolution
    of the partial state with its own auth events (as Synapse): a member demoted before
    the join, whose join the partial state lacks, sends power levels citing its old power;
    the power levels known here win, the event is rejected and the state keeps them."""
    room, _gate = _host_room(fake, FAKE_MEMBERS)  # /state_ids refused: stays partial
    creator, mod = fake.user("creator"), fake.user("member0")
    create = room.state[("m.room.create", "")]
    raised = _raise_to_50(fake, room, mod)
    demoted = {"users": {creator: 100}}
    fake.track(fake.make_pdu(None, room.room_id, creator, "m.room.power_levels", demoted, ""))
    async with asyncio.timeout(TIMEOUT_SECONDS):
        alice = await join_partially(peyvand, peyvand_client, fake, room)
        forged = fake.make_pdu(
            None,
            room.room_id,
            mod,
            "m.room.power_levels",
            {"users": {creator: 100, mod: 50, fake.user("member1"): 50}},
            "",
            auth_events=[create, raised.event_id, room.state[("m.room.member", mod)]],
        )
        status, answer = await fake.send_pdus([forged])
        assert status == 200
        assert "error" in answer["pdus"][forged.event_id], answer
        # A message citing the same auth events passes: the member is joined.
        spoken = fake.make_pdu(
            None,
            room.room_id,
            mod,
            "m.room.message",
            {"msgtype": "m.text", "body": "still here"},
            auth_events=[
                create,
                room.state[("m.room.power_levels", "")],
                room.state[("m.room.member", mod)],
            ],
        )
        status, answer = await fake.send_pdus([spoken])
        assert (status, answer["pdus"]) == (200, {spoken.event_id: {}})
        content = await _state_content(peyvand_client, alice, room.room_id, "m.room.power_levels")
        assert content == demoted
    assert f"{room.room_id} has its full state" not in peyvand.log()


async def test_servers_in_room_are_validated(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient, fake: FakeServer
) -> None:
    """``servers_in_room`` entries that are no server names (Appendices, "Server Name")
    are left out, duplicates kept once: the join still succeeds and events sent while the
    state is partial reach the servers kept."""
    junk = ["bad name", "evil.example/../x", "", 7, None, fake.server_name, "a" * 300]
    room, _gate = _host_room(fake, FAKE_MEMBERS, junk_servers=junk)
    async with asyncio.timeout(TIMEOUT_SECONDS):
        alice = await join_partially(peyvand, peyvand_client, fake, room)
        await say(peyvand_client, room.room_id, alice, "to the servers kept")
        await fake.wait_for_pdu(lambda p: p.get("content", {}).get("body") == "to the servers kept")
    assert "servers_in_room: left out 6 invalid names and 0 beyond the first 5000" in peyvand.log()


async def test_a_state_event_failing_against_the_full_state_leaves_the_state(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient, fake: FakeServer
) -> None:
    """A member banned before the join (the ban is a member event: the partial state
    lacks it) renames the room citing its old join: accepted while partial (as in
    Synapse). Once the state is complete the rename fails against the full state before
    it and leaves the room's state, for the events after it too."""
    room, gate = _host_room(fake, FAKE_MEMBERS)
    creator, mallory = fake.user("creator"), fake.user("member1")
    create = room.state[("m.room.create", "")]
    mallory_join = room.state[("m.room.member", mallory)]
    raised = _raise_to_50(fake, room, mallory)
    fake.track(
        fake.make_pdu(None, room.room_id, creator, "m.room.member", {"membership": "ban"}, mallory)
    )
    async with asyncio.timeout(TIMEOUT_SECONDS):
        alice = await join_partially(peyvand, peyvand_client, fake, room)
        rename = fake.make_pdu(
            None,
            room.room_id,
            mallory,
            "m.room.name",
            {"name": "hijacked"},
            "",
            auth_events=[create, raised.event_id, mallory_join],
        )
        status, answer = await fake.send_pdus([rename])
        assert (status, answer["pdus"]) == (200, {rename.event_id: {}})
        name = await _state_content(peyvand_client, alice, room.room_id, "m.room.name")
        assert name == {"name": "hijacked"}
        gate["open"] = True
        await _joined(peyvand_client, alice, room.room_id)  # waits for the full state
        name = await _state_content(peyvand_client, alice, room.room_id, "m.room.name")
        assert name == {"name": "partial on a fake"}
        # An event after the rename does not bring it back.
        after = fake.make_pdu(
            None, room.room_id, creator, "m.room.message", {"msgtype": "m.text", "body": "later"}
        )
        status, answer = await fake.send_pdus([after])
        assert (status, answer["pdus"]) == (200, {after.event_id: {}})
        await _wait_for_body(peyvand_client, alice, room.room_id, "later")
        name = await _state_content(peyvand_client, alice, room.room_id, "m.room.name")
        assert name == {"name": "partial on a fake"}
    log = peyvand.log()
    assert f"{rename.event_id}, received while {room.room_id} was partial, fails" in log


async def test_the_resync_leaves_out_events_rejected_here(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient, fake: FakeServer
) -> None:
    """A kick this server rejected while partial (its sender demoted before the join)
    passes against its own auth events; a resident naming it in the state at the join
    (``/state_ids``) does not bring it back: it stays out of the room's state."""
    room, _gate = _host_room(fake, FAKE_MEMBERS)
    creator, mod, victim = fake.user("creator"), fake.user("member0"), fake.user("member2")
    create = room.state[("m.room.create", "")]
    victim_join = room.state[("m.room.member", victim)]
    raised = _raise_to_50(fake, room, mod)
    fake.track(
        fake.make_pdu(
            None, room.room_id, creator, "m.room.power_levels", {"users": {creator: 100}}, ""
        )
    )
    at_join = sorted(room.state.values())
    served: list[str] = []  # empty: refused

    def state_ids(request: FakeRequest) -> tuple[int, Any]:
        if not served:
            return 500, {"errcode": "M_UNKNOWN", "error": "not now"}
        chain = auth_closure(fake, served) - set(served)
        return 200, {"pdu_ids": served, "auth_chain_ids": sorted(chain)}

    fake.on("GET", "/_matrix/federation/v1/state_ids/{room_id}", state_ids)
    async with asyncio.timeout(TIMEOUT_SECONDS):
        alice = await join_partially(peyvand, peyvand_client, fake, room)
        kick = fake.make_pdu(
            None,
            room.room_id,
            mod,
            "m.room.member",
            {"membership": "leave"},
            victim,
            auth_events=[create, raised.event_id, room.state[("m.room.member", mod)], victim_join],
        )
        status, answer = await fake.send_pdus([kick])
        assert "error" in answer["pdus"][kick.event_id], (status, answer)
        # The resident lies: the kick instead of the victim's join, in the state at the join.
        served.extend(kick.event_id if e == victim_join else e for e in at_join)
        joined = await _joined(peyvand_client, alice, room.room_id)
        path = f"rooms/{quote(room.room_id)}/state/m.room.member/{quote(victim)}"
        member = await peyvand_client.request("GET", path, token=alice)
    assert member.status == 404, member.body
    assert victim not in joined
    assert f"{room.room_id} has its full state" in peyvand.log()


async def test_the_resync_keeps_trying_past_any_number_of_rounds(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient, fake: FakeServer
) -> None:
    """The resident refuses ``/state_ids`` for more rounds than any bound (backoff capped,
    short on the test network): the resync keeps asking and completes once it answers,
    without a restart."""
    room, gate = _host_room(fake, FAKE_MEMBERS)
    async with asyncio.timeout(TIMEOUT_SECONDS):
        alice = await join_partially(peyvand, peyvand_client, fake, room)
        for _ in range(TIMEOUT_SECONDS * 10):
            if len(fake.requests("GET", "/_matrix/federation/v1/state_ids/")) >= 12:
                break
            await asyncio.sleep(0.1)
        assert f"{room.room_id} has its full state" not in peyvand.log()
        gate["open"] = True
        joined = await _joined(peyvand_client, alice, room.room_id)
    assert len(joined) == FAKE_MEMBERS + 1
    assert f"the state of {room.room_id} is still partial after 8 rounds" in peyvand.log()
