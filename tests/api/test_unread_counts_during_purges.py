"""Unread counts stay exact while history is purged from the middle of a room as
messages arrive in it (issue 15; storage/push_actions.py), against a real Peyvand on
every backend (the race was PostgreSQL's: READ COMMITTED let a purge's fix-up of the
running counts and the event writer's insert after it interleave).

A legal hold on carol keeps her messages, so each retention run purges dave's (and the
earlier rounds' messages) from *after* the room's first notifying event, while alice
and erin send at the same time. Afterwards bob, who never read anything, has in /sync
exactly as many notifications (and highlights) as the room's timeline has messages
(and messages mentioning him) left.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any
from urllib.parse import quote

from harness.admin import login_admin
from harness.client import Account, MatrixClient
from harness.server import HomeserverProcess
from harness.sync import sync_since

ADMIN = "/_peyvand/admin/v1"
DAY_MS = 86_400_000
ROUNDS = 8
# Messages sent during each round's purge, by each of two senders.
SENT_DURING = 6

_txn = itertools.count(1)


async def _send(
    client: MatrixClient, account: Account, room_id: str, body: str, mention: str | None = None
) -> None:
    content: dict[str, Any] = {"msgtype": "m.text", "body": body}
    if mention is not None:
        content["m.mentions"] = {"user_ids": [mention]}
    path = f"rooms/{quote(room_id)}/send/m.room.message/p{next(_txn)}"
    (await client.request("PUT", path, json=content, token=account)).ok()


async def _messages(client: MatrixClient, account: Account, room_id: str) -> list[Any]:
    """Every message of ``room_id``'s timeline as ``account`` sees it, newest first."""
    found: list[Any] = []
    params = {"dir": "b", "limit": "100"}
    while True:
        page = (
            await client.request(
                "GET", f"rooms/{quote(room_id)}/messages", params=params, token=account
            )
        ).ok()
        found += [e for e in page["chunk"] if e["type"] == "m.room.message"]
        if "end" not in page or not page["chunk"]:
            return found
        params = {"dir": "b", "limit": "100", "from": page["end"]}


async def test_counts_stay_exact_when_purges_from_the_middle_meet_new_messages(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    admin = await login_admin(client, homeserver)
    alice, bob, carol, dave, erin = [await client.register() for _ in range(5)]
    room_id = (
        await client.request(
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
    for member in (bob, carol, dave, erin):
        join = await client.request("POST", f"join/{quote(room_id)}", json={}, token=member)
        join.ok()
    hold = {"kind": "user", "target": carol.user_id, "case_id": "C-15", "reason": "case"}
    (await client.request("POST", f"{ADMIN}/legal_holds", json=hold, token=admin)).ok()

    purged = 0
    for round_ in range(ROUNDS):
        await _send(client, carol, room_id, f"kept {round_}")
        for i in range(3):
            await _send(client, dave, room_id, f"purged {round_}.{i}")
        await asyncio.sleep(0.01)
        boundary_ms = int(time.time() * 1000)
        await asyncio.sleep(0.01)
        sending = asyncio.gather(
            *(
                _send(
                    client, sender, room_id, f"during {round_}.{i}", bob.user_id if i % 3 else None
                )
                for i in range(SENT_DURING)
                for sender in (alice, erin)
            )
        )
        run = await client.request(
            "POST",
            f"{ADMIN}/retention/run",
            json={"room_id": room_id, "now_ts": boundary_ms + DAY_MS},
            token=admin,
        )
        await sending
        report = run.ok()
        assert report["purged"]["held"] >= 1
        purged += report["purged"]["events"]

    left = await _messages(client, bob, room_id)
    # Carol's messages, and the last round's sent during its purge; dave's went.
    assert len(left) == ROUNDS + 2 * SENT_DURING
    assert purged >= 3 * ROUNDS
    mentions = [
        e for e in left if bob.user_id in e["content"].get("m.mentions", {}).get("user_ids", [])
    ]
    response = await sync_since(client, bob)
    unread = response["rooms"]["join"][room_id]["unread_notifications"]
    assert (unread["notification_count"], unread["highlight_count"]) == (len(left), len(mentions))
