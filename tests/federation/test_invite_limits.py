"""Invite-spam limits over federation (``[interconnect] remote_invites_per_server_per_minute``
and ``remote_invites_per_user_per_minute``, docs/config.md): token buckets per inviting
server and per inviting remote user; an invite beyond either is answered 429
``M_LIMIT_EXCEEDED`` with ``retry_after_ms`` and nothing is stored.

- With the real Synapse: its users invite users of a Peyvand with small limits into
  Synapse rooms. The invites within the limits arrive (the invitees' /sync); the one beyond
  a user's limit, then the one beyond the server's (from a second Synapse user), fail on
  Synapse's side, are not shown, and leave no row in ``remote_invites``.
- With the fake peer (``harness.fake_server``), exactly on the wire: bursts of exactly the
  configured sizes, the 429 body, the server bucket applying to users not yet seen, and an
  invite accepted again once the bucket has refilled for ``retry_after_ms``.

Each test starts a Peyvand of its own (the limits are fixed at start, and the buckets live
in the server), on every backend. The timing arguments: a bucket of N per minute gains one
token every 60/N seconds, so a test that has taken less than that since the bucket was full
knows every token exactly; each test checks that it did (a loud failure on a machine too
slow for it, never a silent pass).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from harness.client import Account, MatrixClient, new_session
from harness.database import query
from harness.fake_server import FEDERATION_V2, FakeServer, q
from harness.server import HomeserverProcess, start_homeserver
from harness.synapse import SynapseProcess
from harness.sync import sync_until
from peyvand.events.pdu import Pdu

TIMEOUT_SECONDS = 60
_rooms = itertools.count(1)

LimitedPeyvand = Callable[[int, int], HomeserverProcess]


@pytest.fixture
def limited_peyvand(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[LimitedPeyvand]:
    """A factory: ``limited_peyvand(per_server, per_user)`` starts a federating Peyvand of
    the test's own with those invite limits (per minute)."""
    started: list[HomeserverProcess] = []

    def start(per_server: int, per_user: int) -> HomeserverProcess:
        server = start_homeserver(
            backend,
            request,
            tmp_path / f"peyvand-{len(started)}",
            federation=True,
            options={
                "interconnect.remote_invites_per_server_per_minute": str(per_server),
                "interconnect.remote_invites_per_user_per_minute": str(per_user),
            },
        )
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
async def http() -> AsyncIterator[Callable[[str], MatrixClient]]:
    """``http(base_url)``: a JSON client for any server's client API."""
    async with new_session() as session:
        yield lambda base_url: MatrixClient(session, base_url)


def _invites(response: dict[str, Any]) -> set[str]:
    return set(response.get("rooms", {}).get("invite", {}))


def _invited_to(room_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda response: room_id in _invites(response)


async def _full_sync_invites(client: MatrixClient, account: Account) -> set[str]:
    """The rooms ``account`` is invited to, from an initial /sync."""
    return _invites((await client.request("GET", "sync", token=account)).ok())


async def _stored_invites(server: HomeserverProcess, user_id: str) -> set[str]:
    """The rooms of ``remote_invites`` rows for ``user_id`` (any membership, held or not)."""
    rows = await query(server, "SELECT room_id FROM remote_invites WHERE user_id = $1", user_id)
    return {str(row[0]) for row in rows}


async def _stored_rooms(server: HomeserverProcess, room_ids: set[str]) -> set[str]:
    """Which of ``room_ids`` have any ``remote_invites`` row."""
    rows = await query(server, "SELECT room_id FROM remote_invites")
    return {str(row[0]) for row in rows} & room_ids


# -- with the real Synapse --------------------------------------------------------------


async def test_synapse_invites_beyond_the_limits_are_refused(
    limited_peyvand: LimitedPeyvand,
    http: Callable[[str], MatrixClient],
    synapse: SynapseProcess,
    synapse_client: MatrixClient,
) -> None:
    per_server, per_user = 3, 2  # a server token every 20 s, a user token every 30 s
    peyvand = limited_peyvand(per_server, per_user)
    client = http(peyvand.base_url)
    a1, a2, a3, a4 = [await client.register() for _ in range(4)]
    bob = await synapse_client.register()
    carol = await synapse_client.register()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        # The rooms first, so the invites follow one another closely.
        rooms = {}
        for name, owner in [("r1", bob), ("r2", bob), ("r3", bob), ("r4", carol), ("r5", carol)]:
            created = await synapse_client.request("POST", "createRoom", json={}, token=owner)
            rooms[name] = str(created.ok()["room_id"])

        async def invite(inviter: Account, room: str, invitee: Account) -> Any:
            return await synapse_client.request(
                "POST",
                f"rooms/{quote(rooms[room])}/invite",
                json={"user_id": invitee.user_id},
                token=inviter,
            )

        log_start = len(synapse.log())
        started = time.monotonic()
        # bob: as many as his own limit allows, then refused.
        (await invite(bob, "r1", a1)).ok()
        (await invite(bob, "r2", a2)).ok()
        refused_user = await invite(bob, "r3", a3)
        # carol (a user Peyvand has not seen): the server's last token (so none of the
        # refused attempts Synapse made for bob took one), then refused.
        (await invite(carol, "r4", a3)).ok()
        refused_server = await invite(carol, "r5", a4)
        elapsed = time.monotonic() - started
        # No bucket gained a token meanwhile (else the refusals would prove nothing).
        assert elapsed < 60 / per_server, f"the invites took {elapsed:.1f} s, too slow"

        # Synapse got 429 from Peyvand for exactly these two (it retries a 429 a few
        # times), then told its client 502 M_UNKNOWN ("Can't connect to server ...").
        for refused in (refused_user, refused_server):
            assert refused.status == 502, (refused.status, refused.body)
            assert refused.body["errcode"] == "M_UNKNOWN", refused.body
        limited = [
            line
            for line in synapse.log()[log_start:].splitlines()
            if "429: Too Many Requests" in line
        ]
        for name in rooms:
            path = f"/_matrix/federation/v2/invite/{quote(rooms[name], safe='')}/"
            got_429 = any(path in line for line in limited)
            assert got_429 == (name in ("r3", "r5")), (name, limited)
        for room, inviter, invitee in [("r3", bob, a3), ("r5", carol, a4)]:
            member = await synapse_client.request(
                "GET",
                f"rooms/{quote(rooms[room])}/state/m.room.member/{quote(invitee.user_id)}",
                token=inviter,
            )
            assert member.status == 404, member.body

        # The accepted invites show; the refused ones do not, and were never stored.
        for invitee, room in [(a1, "r1"), (a2, "r2"), (a3, "r4")]:
            await sync_until(client, invitee, _invited_to(rooms[room]))
        assert await _full_sync_invites(client, a3) == {rooms["r4"]}
        assert await _full_sync_invites(client, a4) == set()
        assert await _stored_invites(peyvand, a3.user_id) == {rooms["r4"]}
        assert await _stored_invites(peyvand, a4.user_id) == set()
        assert await _stored_rooms(peyvand, set(rooms.values())) == {
            rooms["r1"],
            rooms["r2"],
            rooms["r4"],
        }
    assert "Unhandled error" not in peyvand.log()


# -- with the fake peer, on the wire ----------------------------------------------------


def _invite_pdu(fake: FakeServer, sender: str, invitee: str) -> tuple[str, Pdu, list[Any]]:
    """A fresh room of the fake's (version 11): its ID, an invite of ``invitee`` by
    ``sender`` signed by the fake, and the stripped state sent along."""
    room_id = f"!limits{next(_rooms)}:{fake.server_name}"
    invite = fake.make_invite(room_id, sender, invitee)
    stripped = [
        {"type": "m.room.create", "state_key": "", "sender": sender, "content": {}},
        {"type": "m.room.name", "state_key": "", "sender": sender, "content": {"name": room_id}},
    ]
    return room_id, invite, stripped


async def _send_invite(fake: FakeServer, sender: str, invitee: str) -> tuple[str, int, Any]:
    """PUT /invite v2 of a new room's invite; ``(room ID, status, answer)``."""
    room_id, pdu, stripped = _invite_pdu(fake, sender, invitee)
    status, answer = await fake.request(
        "PUT",
        f"{FEDERATION_V2}/invite/{q(room_id)}/{q(pdu.event_id)}",
        {"room_version": "11", "event": dict(pdu.data), "invite_room_state": stripped},
    )
    return room_id, status, answer


def _assert_limited(status: int, answer: Any, bucket_per_minute: int) -> int:
    """A 429 ``M_LIMIT_EXCEEDED`` whose ``retry_after_ms`` is an integer no longer than one
    token of the bucket takes to refill; that ``retry_after_ms``."""
    assert status == 429, (status, answer)
    assert isinstance(answer, dict) and answer["errcode"] == "M_LIMIT_EXCEEDED", answer
    retry = answer["retry_after_ms"]
    assert isinstance(retry, int) and not isinstance(retry, bool), answer
    assert 0 < retry <= 60_000 // bucket_per_minute + 1, answer
    return retry


async def test_fake_peer_gets_429_beyond_the_limits_and_again_after_refill(
    limited_peyvand: LimitedPeyvand, http: Callable[[str], MatrixClient], tmp_path: Path
) -> None:
    per_server, per_user = 12, 8  # a server token every 5 s, a user token every 7.5 s
    peyvand = limited_peyvand(per_server, per_user)
    client = http(peyvand.base_url)
    alice = await client.register()
    accepted: set[str] = set()
    refused: set[str] = set()

    async with (
        FakeServer(tmp_path, peer=peyvand.server_name) as fake,
        asyncio.timeout(TIMEOUT_SECONDS),
    ):
        user1, user2, user3 = fake.user("spam1"), fake.user("spam2"), fake.user("spam3")

        async def burst(sender: str) -> tuple[int, int, Any]:
            """Invites from ``sender`` until one is refused: how many went through, and
            the refusal's status and answer."""
            count = 0
            for _ in range(per_server + 1):
                room_id, status, answer = await _send_invite(fake, sender, alice.user_id)
                if status != 200:
                    refused.add(room_id)
                    return count, status, answer
                assert answer["event"]["signatures"].keys() >= {
                    fake.server_name,
                    peyvand.server_name,
                }, answer
                accepted.add(room_id)
                count += 1
            raise AssertionError(f"{sender}: {count} invites and none refused")

        started = time.monotonic()

        # user1 gets exactly their own limit, then 429 (the server bucket still has some).
        count, status, answer = await burst(user1)
        assert count == per_user
        _assert_limited(status, answer, per_user)
        # user2 is not limited by user1's bucket, but by the server's: what is left of it.
        count, status, answer = await burst(user2)
        assert count == per_server - per_user
        _assert_limited(status, answer, per_server)
        # A user not seen before is refused too: the server's bucket is empty.
        room_id, status, answer = await _send_invite(fake, user3, alice.user_id)
        refused.add(room_id)
        retry_ms = _assert_limited(status, answer, per_server)
        elapsed = time.monotonic() - started
        assert elapsed < 60 / per_server, f"the bursts took {elapsed:.1f} s, too slow"

        # Once the server bucket has refilled for retry_after_ms, one more invite goes
        # through (user3's own bucket is full), and the next is refused again.
        await asyncio.sleep(retry_ms / 1000 + 0.25)
        room_id, status, answer = await _send_invite(fake, user3, alice.user_id)
        assert status == 200, (status, answer)
        accepted.add(room_id)
        room_id, status, answer = await _send_invite(fake, user3, alice.user_id)
        refused.add(room_id)
        _assert_limited(status, answer, per_server)

    assert len(accepted) == per_server + 1 and len(refused) == 4
    # What went through is stored and shown; what was refused is neither.
    assert await _stored_invites(peyvand, alice.user_id) == accepted
    assert await _full_sync_invites(client, alice) == accepted
    assert "Unhandled error" not in peyvand.log()
