"""What local clients see of a room joined with partial state (MSC3706 / MSC3902), as
Synapse does it: a /sync that does not lazy-load members leaves the room out while its
state is partial and, once the state is complete, shows it as newly joined with every
member (an incremental sync too, though the join came before its token); a sync that
lazy-loads members shows it at once. A second local user's join waits for the full state
and is checked against it: a ban the partial state lacked refuses it.

The room lives on a fake resident server that holds ``/state_ids`` until the test lets
it answer, so the room stays partial exactly as long as the test needs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any
from urllib.parse import quote

from harness.client import MatrixClient
from harness.fake_server import FakeRequest, FakeRoom, FakeServer
from harness.partial_state import fake_members, host_partial_room, join_partially, join_via
from harness.server import HomeserverProcess
from harness.sync import LongPoll, sync, sync_since

TIMEOUT_SECONDS = 120
MEMBERS = 12
# How long the resident may hold /state_ids before it refuses (the test fails before).
_HOLD_SECONDS = 90
_LAZY = json.dumps({"room": {"state": {"lazy_load_members": True}}})
_txn = itertools.count()


def _resident_room(
    fake: FakeServer, banned: tuple[str, ...] = ()
) -> tuple[FakeRoom, asyncio.Event]:
    """A public room (version 10) of the fake with ``MEMBERS`` of its users joined and
    ``banned`` users banned, served as a resident does: make_join, send_join omitting the
    member events (MSC3706), /event, and /state_ids at a join once the returned event is
    set (the room stays partial on the joining server until then)."""
    hosted = host_partial_room(
        fake,
        f"!partialsync{next(_txn)}:{fake.server_name}",
        MEMBERS,
        "partial, then synced",
        banned=banned,
    )
    release = asyncio.Event()

    async def state_ids(request: FakeRequest) -> tuple[int, Any]:
        try:
            async with asyncio.timeout(_HOLD_SECONDS):
                await release.wait()
        except TimeoutError:
            return 500, {"errcode": "M_UNKNOWN", "error": "not now"}
        return hosted.state_ids(request)

    fake.on("GET", "/_matrix/federation/v1/state_ids/{room_id}", state_ids)
    return hosted.room, release


def _fake_members(fake: FakeServer) -> set[str]:
    return fake_members(fake, MEMBERS)


def _members_in(section: dict[str, Any]) -> set[str]:
    """The joined members named by a room's state and timeline in a sync response."""
    events = [*section["state"]["events"], *section["timeline"]["events"]]
    return {
        e["state_key"]
        for e in events
        if e["type"] == "m.room.member" and e["content"].get("membership") == "join"
    }


async def test_a_sync_without_lazy_loading_gets_the_room_once_its_state_is_complete(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient, fake: FakeServer
) -> None:
    room, release = _resident_room(fake)
    room_id = room.room_id
    async with asyncio.timeout(TIMEOUT_SECONDS):
        alice = await join_partially(peyvand, peyvand_client, fake, room)
        sent = (
            await peyvand_client.request(
                "PUT",
                f"rooms/{quote(room_id)}/send/m.room.message/s{next(_txn)}",
                json={"msgtype": "m.text", "body": "sent while partial"},
                token=alice,
            )
        ).ok()["event_id"]

        # While partial: left out of a sync that does not lazy-load members...
        eager = await sync_since(peyvand_client, alice)
        assert room_id not in eager["rooms"]["join"]
        # ... but shown at once to one that does.
        lazy = await sync(peyvand_client, alice, filter=_LAZY)
        lazy_timeline = lazy["rooms"]["join"][room_id]["timeline"]["events"]
        assert sent in [e["event_id"] for e in lazy_timeline]

        # The eager client's next sync waits: the room's new events stay hidden from it.
        poll = await LongPoll.start(
            sync_since(peyvand_client, alice, eager["next_batch"], timeout_ms=60_000), 60
        )
        poll.assert_waiting()
        release.set()
        completed = await poll.woken()

    # The join was before the token, yet the room comes as newly joined, with its full
    # state: every member, not only those the partial state had.
    section = completed["rooms"]["join"][room_id]
    assert _members_in(section) == _fake_members(fake) | {alice.user_id}
    assert section["timeline"]["limited"] is True
    assert sent in [e["event_id"] for e in section["timeline"]["events"]]
    assert section["summary"]["m.joined_member_count"] == MEMBERS + 1
    assert f"{room_id} has its full state" in peyvand.log()
    # Once only: the next sync has nothing more of it.
    after = await sync_since(peyvand_client, alice, completed["next_batch"])
    assert room_id not in after["rooms"]["join"]
    # And a new initial sync shows it like any room.
    initial = (await sync_since(peyvand_client, alice))["rooms"]["join"][room_id]
    assert _members_in(initial) == _fake_members(fake) | {alice.user_id}
    # The lazy-loading client, from its token, is not sent the room again as new.
    lazy_after = await sync(
        peyvand_client, alice, filter=_LAZY, since=lazy["next_batch"], timeout="0"
    )
    assert room_id not in lazy_after["rooms"]["join"]


async def test_a_second_local_join_waits_for_the_full_state_and_is_checked_against_it(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient, fake: FakeServer
) -> None:
    """The partial state lacks the resident's ban of a local user (a member event): the
    banned user's join, checked against the full state, is refused; another user's join
    succeeds and reaches the resident."""
    banned = await peyvand_client.register()
    carol = await peyvand_client.register()
    room, release = _resident_room(fake, banned=(banned.user_id,))
    room_id = room.room_id
    async with asyncio.timeout(TIMEOUT_SECONDS):
        alice = await join_partially(peyvand, peyvand_client, fake, room)
        joins = [
            asyncio.create_task(join_via(peyvand_client, user, room_id, fake.server_name))
            for user in (banned, carol)
        ]
        await asyncio.sleep(1)
        assert not any(join.done() for join in joins), "a join did not wait for the state"
        release.set()
        (banned_status, banned_answer), (carol_status, carol_answer) = await asyncio.gather(*joins)
        assert (banned_status, banned_answer["errcode"]) == (403, "M_FORBIDDEN")
        assert carol_status == 200, carol_answer
        join = await fake.wait_for_pdu(
            lambda p: p.get("type") == "m.room.member" and p.get("state_key") == carol.user_id
        )
    assert join["content"]["membership"] == "join"
    joined = (
        await peyvand_client.request("GET", f"rooms/{quote(room_id)}/joined_members", token=carol)
    ).ok()["joined"]
    assert set(joined) == _fake_members(fake) | {alice.user_id, carol.user_id}
    assert not [
        p
        for p in fake.received_pdus()
        if p.get("type") == "m.room.member" and p.get("state_key") == banned.user_id
    ]
    assert f"while {room_id} was partial, fails against" not in peyvand.log()
