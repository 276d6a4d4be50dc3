"""A client reader follows the event writer (issue 21, "Streams across processes"):
behind nginx, a long-polling /sync served by the reader process wakes with a message
that the writer process committed, in well under the database re-read interval (the bus
carried it), and /messages and a redaction read on the reader agree with the writer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.deployment import WRITER_ROLES, behind_nginx
from harness.nginx import Nginx
from workers.test_typing_presence_across import Client


@pytest.fixture
def proxied(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Nginx]:
    roles = {"writer": WRITER_ROLES, "reader": ["client_reader"]}
    with behind_nginx(request, tmp_path, roles) as (nginx, _):
        yield nginx


def _timeline(sync: dict[str, Any], room_id: str) -> list[dict[str, Any]]:
    room = sync["rooms"]["join"].get(room_id, {})
    return list(room.get("timeline", {}).get("events", []))


async def test_a_reader_wakes_with_what_the_writer_commits(proxied: Nginx) -> None:
    async with aiohttp.ClientSession() as session:
        alice, bob = Client(session, proxied.base_url), Client(session, proxied.base_url)
        await alice.register("alice")
        bob_id = await bob.register("bob")
        (created, worker) = await alice.call("POST", "/createRoom", {"invite": [bob_id]})
        assert worker == "writer"
        room_id = created["room_id"]
        _, worker = await bob.call("POST", f"/rooms/{room_id}/join", {})
        assert worker == "writer"

        # The reader's initial sync has the room bob joined a moment ago on the writer.
        for _ in range(50):  # bounded: 5 s
            sync, worker = await bob.call("GET", "/sync")
            if room_id in sync["rooms"]["join"]:
                break
            await asyncio.sleep(0.1)
        assert worker == "reader"
        assert room_id in sync["rooms"]["join"]
        since = sync["next_batch"]

        for index in range(5):
            poll = asyncio.ensure_future(bob.call("GET", "/sync", since=since, timeout="20000"))
            await asyncio.sleep(0.3)  # the long-poll is waiting on the reader
            assert not poll.done()
            sent_at = time.monotonic()
            (sent, worker) = await alice.call(
                "PUT", f"/rooms/{room_id}/send/m.room.message/t{index}",
                {"msgtype": "m.text", "body": f"hello {index}"},
            )  # fmt: skip
            assert worker == "writer"
            woken, worker = await poll
            waited = time.monotonic() - sent_at
            assert worker == "reader"
            assert [e["event_id"] for e in _timeline(woken, room_id)] == [sent["event_id"]]
            assert waited < 0.9, f"woken {waited:.2f} s after the send: not by the bus"
            since = woken["next_batch"]

        # Reads on the reader see the writer's redaction.
        (redaction, _) = await alice.call(
            "PUT", f"/rooms/{room_id}/redact/{sent['event_id']}/r1", {"reason": "oops"}
        )
        woken, _ = await bob.call("GET", "/sync", since=since, timeout="20000")
        assert [e["event_id"] for e in _timeline(woken, room_id)] == [redaction["event_id"]]
        messages, worker = await bob.call("GET", f"/rooms/{room_id}/messages", dir="b", limit="3")
        assert worker == "reader"
        redacted = next(e for e in messages["chunk"] if e["event_id"] == sent["event_id"])
        assert redacted["content"] == {}
        assert redacted["unsigned"]["redacted_because"]["event_id"] == redaction["event_id"]


async def test_other_streams_wake_a_reader(proxied: Nginx) -> None:
    """Account data, receipts and to-device messages written on the writer reach a
    long-poll waiting on the reader (the stream relay)."""
    async with aiohttp.ClientSession() as session:
        alice, bob = Client(session, proxied.base_url), Client(session, proxied.base_url)
        await alice.register("alice")
        bob_id = await bob.register("bob")
        (created, _) = await alice.call("POST", "/createRoom", {"invite": [bob_id]})
        room_id = created["room_id"]
        await bob.call("POST", f"/rooms/{room_id}/join", {})
        (sent, _) = await alice.call(
            "PUT", f"/rooms/{room_id}/send/m.room.message/t0", {"msgtype": "m.text", "body": "hi"}
        )
        for _ in range(50):  # bounded: 5 s
            sync, _ = await bob.call("GET", "/sync")
            if _timeline(sync, room_id):
                break
            await asyncio.sleep(0.1)
        since = sync["next_batch"]
        (whoami, _) = await bob.call("GET", "/account/whoami")
        bob_device = whoami["device_id"]

        async def woken_by(write: Any, holds: Any) -> dict[str, Any]:
            """Bob's long-poll on the reader, waiting when ``write`` is made on the writer,
            returns what ``holds`` looks for within 0.9 s (a poll woken by something else
            first is polled again, a bounded number of times)."""
            nonlocal since
            for _ in range(5):
                poll = asyncio.ensure_future(bob.call("GET", "/sync", since=since, timeout="20000"))
                await asyncio.sleep(0.3)
                if not poll.done():
                    break
                since = (await poll)[0]["next_batch"]
            started = time.monotonic()
            await write
            for _ in range(5):
                answer, worker = await poll
                assert worker == "reader"
                since = answer["next_batch"]
                if holds(answer):
                    assert time.monotonic() - started < 0.9  # by the bus, not the timeout
                    return answer
                poll = asyncio.ensure_future(bob.call("GET", "/sync", since=since, timeout="20000"))
            raise AssertionError("the write never reached the reader's sync")

        colour = {"type": "org.example.colour", "content": {"c": "teal"}}
        await woken_by(
            bob.call("PUT", f"/user/{bob_id}/account_data/org.example.colour", {"c": "teal"}),
            lambda answer: colour in answer.get("account_data", {}).get("events", []),
        )

        def has_receipt(answer: dict[str, Any]) -> bool:
            room = answer.get("rooms", {}).get("join", {}).get(room_id, {})
            return any(
                e["type"] == "m.receipt" and sent["event_id"] in e["content"]
                for e in room.get("ephemeral", {}).get("events", [])
            )

        await woken_by(
            alice.call("POST", f"/rooms/{room_id}/receipt/m.read/{sent['event_id']}", {}),
            has_receipt,
        )
        await woken_by(
            alice.call(
                "PUT", "/sendToDevice/org.example.ping/d1",
                {"messages": {bob_id: {bob_device: {"n": 1}}}},
            ),
            lambda answer: [e["content"] for e in answer.get("to_device", {}).get("events", [])]
            == [{"n": 1}],
        )  # fmt: skip
