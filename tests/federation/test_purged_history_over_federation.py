"""Purged history stays part of the room's DAG over federation, on every backend.

Retention (and disappearing messages) purge events: they leave the timeline and only
their redacted PDUs are kept. Other servers still build on them (a purged event can be a
forward extremity) and walk through them, so the federation read endpoints answer for
them as for any event, with the redacted form: ``/state_ids`` and ``/state`` at a purged
event (the state before it), ``/backfill`` and ``/get_missing_events`` (walking through
purged events and returning their skeletons: content pruned, hashes and signatures as
signed, so a peer checks them and keeps the redacted copy), ``/event_auth``; an event a
peer sends on top of a purged extremity is accepted; and a PDU queued for a server and
purged before it went is sent as its skeleton rather than dropped.

A fake homeserver (``harness.fake_server``) is the peer. Purges are asked for through the
admin API (``POST /_peyvand/admin/v1/retention/run``) with ``now_ts`` a day ahead, in a
room whose ``m.room.retention`` ``max_lifetime`` is one day.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.admin import login_admin
from harness.client import Account, MatrixClient
from harness.fake_server import FEDERATION_V1, FakeRequest, FakeServer, q
from harness.server import HomeserverProcess
from harness.synapse import SynapseProcess
from peyvand.events.hashes import check_content_hash, compute_event_id
from peyvand.events.room_versions import RoomVersion
from peyvand.events.signing import decode_verify_key, verify_event_signature

ADMIN = "/_peyvand/admin/v1"
DAY_MS = 86_400_000
TIMEOUT_SECONDS = 30

_txn = itertools.count(1)
_names = itertools.count()


@pytest.fixture
async def fake(peyvand: HomeserverProcess, tmp_path: Path) -> AsyncIterator[FakeServer]:
    async with FakeServer(tmp_path, peer=peyvand.server_name) as server:
        yield server


@pytest.fixture
async def admin(peyvand: HomeserverProcess, peyvand_client: MatrixClient) -> Account:
    return await login_admin(peyvand_client, peyvand)


@dataclass(frozen=True, slots=True)
class Room:
    """A public Peyvand room with a one-day ``max_lifetime``, created by ``alice`` and
    joined by ``bob`` of the fake server."""

    room_id: str
    alice: Account
    bob: str
    version: RoomVersion


@dataclass(frozen=True, slots=True)
class History:
    """In order after bob's join: ``m1``, topic ``t1``, ``m2``, topic ``t2`` (current
    state, kept), ``m3`` (the forward extremity). A purge run removed all but ``t2``."""

    m1: str
    t1: str
    m2: str
    t2: str
    m3: str


async def _send(client: MatrixClient, account: Account, room_id: str, body: str) -> str:
    path = f"rooms/{room_id}/send/m.room.message/p{next(_txn)}"
    content = {"msgtype": "m.text", "body": body}
    return str((await client.request("PUT", path, json=content, token=account)).ok()["event_id"])


async def _topic(client: MatrixClient, account: Account, room_id: str, topic: str) -> str:
    path = f"rooms/{room_id}/state/m.room.topic/"
    response = await client.request("PUT", path, json={"topic": topic}, token=account)
    return str(response.ok()["event_id"])


async def _purge(client: MatrixClient, admin: Account, room_id: str) -> Any:
    """A retention run evaluated a day and a minute from now: everything sent so far
    that is not current state is purged."""
    body = {"room_id": room_id, "now_ts": int(time.time() * 1000) + DAY_MS + 60_000}
    return (await client.request("POST", f"{ADMIN}/retention/run", json=body, token=admin)).ok()


def _pdu_id(room: Room, raw: Mapping[str, Any]) -> str:
    return str(compute_event_id(raw, room.version))


async def _wait_for(fake: FakeServer, room: Room, event_id: str) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT_SECONDS):
        return await fake.wait_for_pdu(
            lambda p: p.get("room_id") == room.room_id and _pdu_id(room, p) == event_id
        )


async def _assert_skeleton(
    fake: FakeServer, peyvand: HomeserverProcess, room: Room, raw: Mapping[str, Any]
) -> None:
    """``raw`` is the redacted copy of a Peyvand event: content pruned to nothing, the
    original content hash (no longer matching, so a receiver keeps the redacted copy) and
    Peyvand's signature, which still verifies."""
    assert raw["content"] == {}, raw
    assert "sha256" in raw["hashes"] and not check_content_hash(raw), raw
    status, keys = await fake.request("GET", "/_matrix/key/v2/server", sign=False)
    assert status == 200, keys
    [(key_id, key)] = keys["verify_keys"].items()
    verify_key = decode_verify_key(key_id, key["key"])
    assert verify_event_signature(raw, room.version, peyvand.server_name, verify_key), raw


@pytest.fixture
async def room(peyvand_client: MatrixClient, fake: FakeServer) -> Room:
    alice = await peyvand_client.register()
    room_id = (
        await peyvand_client.request(
            "POST",
            "createRoom",
            json={
                "preset": "public_chat",
                "initial_state": [
                    {"type": "m.room.retention", "content": {"max_lifetime": DAY_MS}}
                ],
            },
            token=alice,
        )
    ).ok()["room_id"]
    bob = fake.user(f"bob{next(_names)}")
    async with asyncio.timeout(TIMEOUT_SECONDS):
        await fake.join(room_id, bob)
    return Room(room_id, alice, bob, fake.rooms[room_id].room_version)


@pytest.fixture
async def history(
    peyvand_client: MatrixClient, fake: FakeServer, room: Room, admin: Account
) -> History:
    client, alice = peyvand_client, room.alice
    m1 = await _send(client, alice, room.room_id, "first secret")
    t1 = await _topic(client, alice, room.room_id, "old topic")
    m2 = await _send(client, alice, room.room_id, "second secret")
    t2 = await _topic(client, alice, room.room_id, "new topic")
    m3 = await _send(client, alice, room.room_id, "last secret")
    await _wait_for(fake, room, m3)  # the fake knows the DAG up to the extremity
    report = await _purge(client, admin, room.room_id)
    assert report["purged"]["events"] == 4, report
    for event_id in (m1, t1, m2, m3):
        response = await client.request(
            "GET", f"rooms/{q(room.room_id)}/event/{q(event_id)}", token=alice
        )
        assert response.status == 404, (event_id, response.body)
    return History(m1, t1, m2, t2, m3)


async def _state_ids(fake: FakeServer, room: Room, event_id: str) -> dict[str, Any]:
    status, body = await fake.request(
        "GET", f"{FEDERATION_V1}/state_ids/{q(room.room_id)}", query={"event_id": event_id}
    )
    assert status == 200, (event_id, body)
    return dict(body)


async def _current_state(client: MatrixClient, room: Room) -> dict[tuple[str, str], str]:
    events = (await client.request("GET", f"rooms/{q(room.room_id)}/state", token=room.alice)).ok()
    return {(e["type"], e["state_key"]): e["event_id"] for e in events}


# -- state at purged events ------------------------------------------------------------


async def test_state_ids_and_state_at_a_purged_extremity(
    fake: FakeServer, peyvand_client: MatrixClient, room: Room, history: History
) -> None:
    """GET /state_ids and /state at the purged forward extremity: the state before it
    (here the current state), with its auth chain."""
    current = await _current_state(peyvand_client, room)
    assert current[("m.room.topic", "")] == history.t2

    answer = await _state_ids(fake, room, history.m3)
    assert set(answer["pdu_ids"]) == set(current.values())
    assert answer["auth_chain_ids"]
    assert history.m3 not in answer["pdu_ids"]

    status, body = await fake.request(
        "GET", f"{FEDERATION_V1}/state/{q(room.room_id)}", query={"event_id": history.m3}
    )
    assert status == 200, body
    assert {_pdu_id(room, p) for p in body["pdus"]} == set(current.values())
    assert {_pdu_id(room, p) for p in body["auth_chain"]} == set(answer["auth_chain_ids"])


async def test_state_ids_before_purged_and_kept_state_events(
    fake: FakeServer, room: Room, history: History
) -> None:
    """The state *before* an event, whether it or its prev event was purged: at ``t2``
    (kept; its prev ``m2`` purged) the topic is ``t1``; at ``m2`` (purged) it is ``t1``; at
    ``t1`` (purged; its prev ``m1`` purged) there is no topic yet."""
    at_t2 = await _state_ids(fake, room, history.t2)
    assert history.t1 in at_t2["pdu_ids"] and history.t2 not in at_t2["pdu_ids"]
    at_m2 = await _state_ids(fake, room, history.m2)
    assert history.t1 in at_m2["pdu_ids"] and history.t2 not in at_m2["pdu_ids"]
    at_t1 = await _state_ids(fake, room, history.t1)
    assert history.t1 not in at_t1["pdu_ids"] and history.t2 not in at_t1["pdu_ids"]
    assert set(at_t1["pdu_ids"]) == set(at_t2["pdu_ids"]) - {history.t1}


async def test_unknown_event_still_404(fake: FakeServer, room: Room, history: History) -> None:
    status, body = await fake.request(
        "GET",
        f"{FEDERATION_V1}/state_ids/{q(room.room_id)}",
        query={"event_id": "$nosuchevent"},
    )
    assert status == 404, body


# -- walking through purged events -----------------------------------------------------


async def test_backfill_walks_through_purged_events(
    fake: FakeServer, peyvand: HomeserverProcess, room: Room, history: History
) -> None:
    """GET /backfill from the purged extremity: the five events, the purged ones as
    verifiable skeletons, the kept topic whole."""
    status, body = await fake.request(
        "GET",
        f"{FEDERATION_V1}/backfill/{q(room.room_id)}",
        query={"v": history.m3, "limit": "5"},
    )
    assert status == 200, body
    pdus = {_pdu_id(room, p): p for p in body["pdus"]}
    assert list(pdus) == [history.m3, history.t2, history.m2, history.t1, history.m1]
    for event_id in (history.m1, history.t1, history.m2, history.m3):
        await _assert_skeleton(fake, peyvand, room, pdus[event_id])
    assert pdus[history.t2]["content"] == {"topic": "new topic"}
    assert check_content_hash(pdus[history.t2])

    # Further back, past the purged history, to bob's join.
    status, body = await fake.request(
        "GET",
        f"{FEDERATION_V1}/backfill/{q(room.room_id)}",
        query={"v": history.m1, "limit": "2"},
    )
    assert status == 200, body
    [first, before] = body["pdus"]
    assert _pdu_id(room, first) == history.m1
    assert before["type"] == "m.room.member" and before["state_key"] == room.bob


async def test_get_missing_events_walks_through_purged_events(
    fake: FakeServer,
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    room: Room,
    history: History,
) -> None:
    """POST /get_missing_events from a new event back to ``m1``: every event between, the
    purged ones as skeletons, oldest first."""
    latest = await _send(peyvand_client, room.alice, room.room_id, "after the purge")
    status, body = await fake.request(
        "POST",
        f"{FEDERATION_V1}/get_missing_events/{q(room.room_id)}",
        {"earliest_events": [history.m1], "latest_events": [latest], "limit": 10},
    )
    assert status == 200, body
    events = body["events"]
    assert [_pdu_id(room, p) for p in events] == [
        history.t1,
        history.m2,
        history.t2,
        history.m3,
    ]
    for raw in (events[0], events[1], events[3]):
        await _assert_skeleton(fake, peyvand, room, raw)

    # The limit holds across purged events too.
    status, body = await fake.request(
        "POST",
        f"{FEDERATION_V1}/get_missing_events/{q(room.room_id)}",
        {"earliest_events": [], "latest_events": [latest], "limit": 2},
    )
    assert status == 200, body
    assert [_pdu_id(room, p) for p in body["events"]] == [history.t2, history.m3]


async def test_event_auth_and_event_of_a_purged_event(
    fake: FakeServer, peyvand: HomeserverProcess, room: Room, history: History
) -> None:
    status, body = await fake.request("GET", f"{FEDERATION_V1}/event/{q(history.m3)}")
    assert status == 200, body
    [raw] = body["pdus"]
    await _assert_skeleton(fake, peyvand, room, raw)
    status, body = await fake.request(
        "GET", f"{FEDERATION_V1}/event_auth/{q(room.room_id)}/{q(history.m3)}"
    )
    assert status == 200, body
    chain = {_pdu_id(room, p) for p in body["auth_chain"]}
    assert set(raw["auth_events"]) <= chain


async def test_walks_serve_redacted_timeline_events_redacted(
    fake: FakeServer, peyvand: HomeserverProcess, peyvand_client: MatrixClient, room: Room
) -> None:
    """A timeline event redacted (not purged) goes pruned on /backfill and
    /get_missing_events too, as on /event."""
    secret = await _send(peyvand_client, room.alice, room.room_id, "redacted secret")
    path = f"rooms/{q(room.room_id)}/redact/{q(secret)}/r{next(_txn)}"
    redaction = str(
        (await peyvand_client.request("PUT", path, json={}, token=room.alice)).ok()["event_id"]
    )
    status, body = await fake.request(
        "GET",
        f"{FEDERATION_V1}/backfill/{q(room.room_id)}",
        query={"v": redaction, "limit": "2"},
    )
    assert status == 200, body
    [_, raw] = body["pdus"]
    assert _pdu_id(room, raw) == secret
    await _assert_skeleton(fake, peyvand, room, raw)
    status, body = await fake.request(
        "POST",
        f"{FEDERATION_V1}/get_missing_events/{q(room.room_id)}",
        {"earliest_events": [], "latest_events": [redaction], "limit": 1},
    )
    assert status == 200, body
    [raw] = body["events"]
    assert _pdu_id(room, raw) == secret
    await _assert_skeleton(fake, peyvand, room, raw)
    assert "redacted secret" not in str(body)


async def test_state_and_auth_chains_serve_redacted_state_redacted(
    fake: FakeServer, peyvand: HomeserverProcess, peyvand_client: MatrixClient, room: Room
) -> None:
    """A current state event redacted here (a topic) goes pruned in /state and in auth
    chains (/event_auth), as on /event: its content is what the redaction removed."""
    topic = await _topic(peyvand_client, room.alice, room.room_id, "redacted topic secret")
    path = f"rooms/{q(room.room_id)}/redact/{q(topic)}/r{next(_txn)}"
    redaction = str(
        (await peyvand_client.request("PUT", path, json={}, token=room.alice)).ok()["event_id"]
    )
    await _wait_for(fake, room, redaction)
    status, body = await fake.request(
        "GET", f"{FEDERATION_V1}/state/{q(room.room_id)}", query={"event_id": redaction}
    )
    assert status == 200, body
    [raw] = [p for p in body["pdus"] if _pdu_id(room, p) == topic]
    await _assert_skeleton(fake, peyvand, room, raw)
    assert "redacted topic secret" not in str(body)
    # Alice's member event, named secretly, then redacted: an auth event of hers.
    name = f"profile/{q(room.alice.user_id)}/displayname"
    body_name = {"displayname": "secret display name"}
    (await peyvand_client.request("PUT", name, json=body_name, token=room.alice)).ok()
    member = (
        await peyvand_client.request(
            "GET",
            f"rooms/{q(room.room_id)}/state/m.room.member/{q(room.alice.user_id)}",
            params={"format": "event"},
            token=room.alice,
        )
    ).ok()["event_id"]
    path = f"rooms/{q(room.room_id)}/redact/{q(member)}/r{next(_txn)}"
    last = str(
        (await peyvand_client.request("PUT", path, json={}, token=room.alice)).ok()["event_id"]
    )
    await _wait_for(fake, room, last)
    status, body = await fake.request(
        "GET", f"{FEDERATION_V1}/event_auth/{q(room.room_id)}/{q(last)}"
    )
    assert status == 200, body
    assert member in {_pdu_id(room, p) for p in body["auth_chain"]}
    assert "secret display name" not in str(body)


# -- building on purged events ---------------------------------------------------------


async def test_event_on_top_of_a_purged_extremity_is_accepted(
    fake: FakeServer, peyvand_client: MatrixClient, room: Room, history: History
) -> None:
    pdu = fake.make_pdu(
        None,
        room.room_id,
        room.bob,
        "m.room.message",
        {"msgtype": "m.text", "body": "on top of purged history"},
        prev_events=[history.m3],
    )
    status, answer = await fake.send_pdus([pdu])
    assert status == 200, answer
    assert answer["pdus"][pdu.event_id] == {}, answer
    response = await peyvand_client.request(
        "GET", f"rooms/{q(room.room_id)}/event/{q(pdu.event_id)}", token=room.alice
    )
    assert response.status == 200, response.body
    assert response.body["content"]["body"] == "on top of purged history"
    # Peyvand's next event builds on it (not on a fork).
    after = await _send(peyvand_client, room.alice, room.room_id, "reply")
    raw = await _wait_for(fake, room, after)
    assert raw["prev_events"] == [pdu.event_id]


# -- sending ---------------------------------------------------------------------------


async def test_pdu_purged_while_queued_is_sent_as_its_skeleton(
    fake: FakeServer,
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    room: Room,
    admin: Account,
) -> None:
    """While a transaction to the fake is in flight, ``queued`` waits in the outbox; it is
    purged before it goes, and goes as its redacted copy (the fake's DAG stays whole)."""
    gate = asyncio.Event()

    async def held(request: FakeRequest) -> tuple[int, Any]:
        await gate.wait()
        return 200, {"pdus": {}}

    fake.on("PUT", f"{FEDERATION_V1}/send/{{txn_id}}", held)
    in_flight = await _send(peyvand_client, room.alice, room.room_id, "in flight")
    await _wait_for(fake, room, in_flight)  # recorded on arrival, answered at the gate
    queued = await _send(peyvand_client, room.alice, room.room_id, "queued secret")
    report = await _purge(peyvand_client, admin, room.room_id)
    assert report["purged"]["events"] == 2, report
    gate.set()
    raw = await _wait_for(fake, room, queued)
    await _assert_skeleton(fake, peyvand, room, raw)


async def test_backfill_by_synapse_through_purged_history(
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    room: Room,
    history: History,
    synapse: SynapseProcess,
    synapse_client: MatrixClient,
) -> None:
    """A Synapse user joins after the purge, on top of the purged extremity, and
    paginates back: Synapse backfills the purged events as redacted events, past them to
    the room's creation, and its user's message reaches Peyvand."""
    carol = await synapse_client.register()
    async with asyncio.timeout(TIMEOUT_SECONDS * 2):
        (
            await synapse_client.request(
                "POST",
                f"join/{q(room.room_id)}",
                json={},
                token=carol,
                params={"server_name": peyvand.server_name},
            )
        ).ok()
        seen: dict[str, dict[str, Any]] = {}
        start: str | None = None
        while not any(e["type"] == "m.room.create" for e in seen.values()):
            params = {"dir": "b", "limit": "50"} | ({"from": start} if start else {})
            page = (
                await synapse_client.request(
                    "GET", f"rooms/{q(room.room_id)}/messages", token=carol, params=params
                )
            ).ok()
            seen.update((e["event_id"], e) for e in page["chunk"])
            start = page.get("end")
            if start is None:
                await asyncio.sleep(0.2)  # the start of the known history: try again
        for event_id in (history.m1, history.t1, history.m2, history.m3):
            assert seen[event_id]["content"] == {}, seen[event_id]
        assert seen[history.t2]["content"] == {"topic": "new topic"}
        said = await _send(synapse_client, carol, room.room_id, "from synapse")
        for _ in range(TIMEOUT_SECONDS * 10):
            response = await peyvand_client.request(
                "GET", f"rooms/{q(room.room_id)}/event/{q(said)}", token=room.alice
            )
            if response.status == 200:
                break
            await asyncio.sleep(0.1)
        assert response.status == 200, response.body
    assert "secret" not in str(seen)
