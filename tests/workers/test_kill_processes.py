"""kill -9 in a deployment (issue 21, acceptance, with the one event writer there is for
now): 16 clients send through nginx, each retrying a failed send with its transaction ID,
while a client reader and then the event writer are killed and started again. No message
whose send was answered 200 is lost or stored twice; the other reader carries the syncs
of the killed one; the restarted processes rejoin and serve."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.client import Account, MatrixClient, new_session
from harness.deployment import WRITER_ROLES, Deployment, behind_nginx
from harness.nginx import Nginx

SENDERS = 16
# Each sender's messages, and the bound of the whole send loop.
MESSAGES = 40
SEND_SECONDS = 90.0


@pytest.fixture
def proxied(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Nginx, Deployment]]:
    roles = {"writer": WRITER_ROLES, "reader1": ["client_reader"], "reader2": ["client_reader"]}
    with behind_nginx(request, tmp_path, roles) as deployed:
        yield deployed


class Progress:
    """How many sends were answered 200 so far, and a wait for a count."""

    def __init__(self) -> None:
        self.answered = 0
        self._changed = asyncio.Condition()

    async def one_more(self) -> None:
        async with self._changed:
            self.answered += 1
            self._changed.notify_all()

    async def reach(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.answered >= count)


async def _send_all(
    client: MatrixClient,
    account: Account,
    room_id: str,
    index: int,
    deadline: float,
    progress: Progress,
    failures: list[int],
) -> dict[str, str]:
    """Send this sender's messages one after another, each retried with its transaction
    ID until answered 200 (bounded by ``deadline``): txn ID -> event ID of those answered;
    each answer counted in ``progress``, each failed attempt in ``failures``."""
    answered: dict[str, str] = {}
    for n in range(MESSAGES):
        txn = f"s{index}-m{n}"
        while time.monotonic() < deadline:
            try:
                sent = await client.request(
                    "PUT",
                    f"rooms/{room_id}/send/m.room.message/{txn}",
                    {"msgtype": "m.text", "body": txn},
                    token=account,
                )
            except (OSError, TimeoutError):
                sent = None
            if sent is not None and sent.status == 200:
                answered[txn] = sent.body["event_id"]
                await progress.one_more()
                break
            failures.append(index)
            await asyncio.sleep(0.2)
    return answered


async def _history(client: MatrixClient, account: Account, room_id: str) -> list[dict[str, Any]]:
    """Every message of the room, newest first, paginated (bounded)."""
    events: list[dict[str, Any]] = []
    params = {"dir": "b", "limit": "100"}
    for _ in range(20):
        page = (
            await client.request("GET", f"rooms/{room_id}/messages", token=account, params=params)
        ).ok()
        events += [e for e in page["chunk"] if e["type"] == "m.room.message"]
        if "end" not in page or not page["chunk"]:
            break
        params = {"dir": "b", "limit": "100", "from": page["end"]}
    return events


async def test_no_answered_message_is_lost_when_processes_die(
    proxied: tuple[Nginx, Deployment],
) -> None:
    nginx, deployment = proxied
    async with new_session() as session:
        client = MatrixClient(session, nginx.base_url)
        owner = await client.register()
        room_id = (
            await client.request("POST", "createRoom", {"preset": "public_chat"}, token=owner)
        ).ok()["room_id"]
        senders = [await client.register() for _ in range(SENDERS)]
        for account in senders:
            (await client.request("POST", f"rooms/{room_id}/join", {}, token=account)).ok()

        deadline = time.monotonic() + SEND_SECONDS
        progress = Progress()
        failures: list[int] = []
        sending = asyncio.gather(
            *(
                _send_all(client, a, room_id, i, deadline, progress, failures)
                for i, a in enumerate(senders)
            )
        )
        total = SENDERS * MESSAGES
        await asyncio.wait_for(progress.reach(total // 4), SEND_SECONDS)
        await asyncio.to_thread(deployment["reader1"].kill)
        # Reads keep working through the other reader meanwhile.
        assert (await client.request("GET", "sync", token=owner)).status == 200
        await asyncio.wait_for(progress.reach(total // 2), SEND_SECONDS)
        await asyncio.to_thread(deployment["writer"].kill)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(deployment["writer"].start)
        await asyncio.to_thread(deployment["reader1"].start)
        answered = await sending

    assert sum(len(a) for a in answered) == SENDERS * MESSAGES, "sends did not all get a 200"
    assert failures, "the writer's death failed no send: the test missed its window"
    async with new_session() as session:
        client = MatrixClient(session, nginx.base_url)
        for _ in range(50):  # bounded: the readers follow the restarted writer
            history = await _history(client, owner, room_id)
            if len(history) >= SENDERS * MESSAGES:
                break
            await asyncio.sleep(0.2)
        bodies = [e["content"]["body"] for e in history]
        assert len(bodies) == len(set(bodies)), "a message was stored twice"
        stored = {e["content"]["body"]: e["event_id"] for e in history}
        for by_txn in answered:
            for txn, event_id in by_txn.items():
                assert stored.get(txn) == event_id, f"{txn} answered 200 but not in the room"
        # Both readers serve again.
        seen = set()
        for process in ("reader1", "reader2"):
            versions = await session.get(f"{deployment[process].base_url}/_matrix/client/versions")
            assert versions.status == 200
            seen.add(versions.headers["X-Peyvand-Worker"])
        assert seen == {"reader1", "reader2"}
