"""Relations, threads and edits across Peyvand and a real Synapse, on every backend
(Client-Server API "Relationship types", "Threading", "Event replacements", "Reactions",
"Reference relations"; issue 16).

A Peyvand user (alice) and a Synapse user (bob) share a room, created on either server.
Each sends thread replies, reactions, edits (one of them invalid: bob editing alice's
message) and a reference to their own and the other's messages, one at a time, each
seen by the other server before the next. Then, for every message, both servers must
serve the same bundled aggregations (``unsigned["m.relations"]``: ``m.replace`` whole,
``m.thread`` count and latest_event with its own edit, ``m.reference``) on /event and
/messages, and the same /relations lists (all, per relation type, per event type, and
recursive, both directions), and the same thread list (GET /threads), and both must match
what was sent. ``current_user_participated`` and ``include=participated`` depend on the
reader, so they are checked for each one.

Then each side redacts some of it (a thread's latest reply, the newest edit, a reaction,
the reference, a thread's only reply), and both servers must again agree, without them.

Thread notifications ("Threaded read receipts") are compared in mirror: replies from the
other server in alice's thread count on Peyvand as the mirrored replies in bob's count on
Synapse, per thread with a mention's highlight, and threaded receipts cross both ways.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from harness.client import Account, MatrixClient
from harness.rooms import create_room
from harness.server import HomeserverProcess
from harness.synapse import SynapseProcess
from harness.sync import wait_until_joined

TIMEOUT_SECONDS = 120
SEEN_ATTEMPTS = 300  # 100 ms apart: an event reaches the other server within 30 s
# Synapse applies a receipt to the counts it has already summarised at its next rotation
# of push summaries, every 30 s (``event_push_actions``' ``_rotate_notifs`` loop): its
# counts after a receipt are awaited longer than that.
SYNAPSE_RECEIPT_ATTEMPTS = 450
_txns = itertools.count()

# What a served event is compared by: what its sender wrote and its ID. ``unsigned``
# (``age``, ``transaction_id``, the server's own bundles) legitimately differs.
_EVENT_KEYS = ("event_id", "type", "sender", "room_id", "origin_server_ts", "content")


@dataclass(frozen=True)
class Side:
    """One server's user, as their client reaches it."""

    name: str
    client: MatrixClient
    account: Account
    server_name: str

    async def get(self, path: str, **params: str) -> Any:
        response = await self.client.request("GET", path, token=self.account, params=params)
        return response.ok()


async def _send(side: Side, other: Side, room_id: str, event_type: str, content: Any) -> str:
    """``side`` sends the event; its ID once ``other``'s server holds it too."""
    path = f"rooms/{quote(room_id)}/send/{event_type}/rel{next(_txns)}"
    response = await side.client.request("PUT", path, json=content, token=side.account)
    event_id: str = response.ok()["event_id"]
    for _ in range(SEEN_ATTEMPTS):
        seen = await other.client.request(
            "GET", f"rooms/{quote(room_id)}/event/{quote(event_id)}", token=other.account
        )
        if seen.status == 200:
            return event_id
        await asyncio.sleep(0.1)
    raise AssertionError(f"{other.name} never received {event_type} {event_id} from {side.name}")


def _text(body: str, **relates_to: Any) -> dict[str, Any]:
    content: dict[str, Any] = {"msgtype": "m.text", "body": body}
    if relates_to:
        content["m.relates_to"] = relates_to
    return content


def _thread_reply(root: str, body: str) -> dict[str, Any]:
    return _text(
        body,
        rel_type="m.thread",
        event_id=root,
        is_falling_back=True,
        **{"m.in_reply_to": {"event_id": root}},
    )


def _edit(original: str, body: str) -> dict[str, Any]:
    content = _text(f"* {body}", rel_type="m.replace", event_id=original)
    content["m.new_content"] = {"msgtype": "m.text", "body": body}
    return content


def _reaction(target: str, key: str) -> dict[str, Any]:
    return {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}


def _event(served: dict[str, Any]) -> dict[str, Any]:
    return {key: served.get(key) for key in _EVENT_KEYS}


def _bundle(served: dict[str, Any]) -> dict[str, Any]:
    """A served event's bundled aggregations, normalised for comparison: the events in
    them by ``_EVENT_KEYS``, ``latest_event``'s own edit by ID, ``m.reference`` as IDs.
    ``current_user_participated`` is left out (it depends on the reader)."""
    relations = served.get("unsigned", {}).get("m.relations", {})
    bundle: dict[str, Any] = {}
    if "m.replace" in relations:
        bundle["m.replace"] = _event(relations["m.replace"])
    if "m.thread" in relations:
        thread = relations["m.thread"]
        latest = thread["latest_event"]
        edit = latest.get("unsigned", {}).get("m.relations", {}).get("m.replace")
        bundle["m.thread"] = {
            "count": thread["count"],
            "latest_event": _event(latest),
            "latest_event_edit": edit["event_id"] if edit else None,
        }
    if "m.reference" in relations:
        chunk = relations["m.reference"]["chunk"]
        bundle["m.reference"] = sorted(item["event_id"] for item in chunk)
    return bundle


def _participated(served: dict[str, Any]) -> bool | None:
    thread = served.get("unsigned", {}).get("m.relations", {}).get("m.thread")
    return None if thread is None else bool(thread["current_user_participated"])


async def _relations(side: Side, room_id: str, event_id: str, *tail: str, **params: str) -> Any:
    """The IDs /relations lists for ``event_id`` (newest first, one page of 50)."""
    path = "/".join(
        [f"/_matrix/client/v1/rooms/{quote(room_id)}/relations/{quote(event_id)}", *tail]
    )
    page = await side.get(path, limit="50", **params)
    assert "next_batch" not in page, f"{side.name}: more than one page for {event_id}"
    return [event["event_id"] for event in page["chunk"]]


async def _messages(side: Side, room_id: str) -> dict[str, dict[str, Any]]:
    """The room's last 100 events from /messages, by ID."""
    page = await side.get(f"rooms/{quote(room_id)}/messages", dir="b", limit="100")
    return {event["event_id"]: event for event in page["chunk"]}


@dataclass(frozen=True)
class Sent:
    """The events of the conversation, by who sent what to which message."""

    a_root: str  # alice's message, with a thread (bob's reply, then alice's)
    b_root: str  # bob's message, with a thread (alice's reply)
    c_root: str  # alice's message, whose thread only alice replied in
    bob_in_a: str
    alice_in_a: str
    alice_in_b: str
    alice_in_c: str
    bob_on_a: str  # reactions
    alice_on_a: str
    alice_on_b: str
    alice_edit_1: str  # alice's edits of her message, the second one the newest
    alice_edit_2: str
    bob_edit: str  # bob's edit of his message
    bob_edits_a: str  # bob's edit of alice's message: invalid
    reply_edit: str  # alice's edit of her reply in her thread
    bob_ref: str  # bob's reference to alice's message


async def _converse(alice: Side, bob: Side, room_id: str) -> Sent:
    """Each event sent once the previous one reached both servers, so both hold the same
    order (depth and stream order agree)."""
    message = "m.room.message"
    a_root = await _send(alice, bob, room_id, message, _text("alice's root"))
    b_root = await _send(bob, alice, room_id, message, _text("bob's root"))
    bob_in_a = await _send(bob, alice, room_id, message, _thread_reply(a_root, "b1"))
    alice_in_a = await _send(alice, bob, room_id, message, _thread_reply(a_root, "a1"))
    alice_in_b = await _send(alice, bob, room_id, message, _thread_reply(b_root, "a2"))
    bob_on_a = await _send(bob, alice, room_id, "m.reaction", _reaction(a_root, "🎉"))
    alice_on_a = await _send(alice, bob, room_id, "m.reaction", _reaction(a_root, "👍"))
    alice_on_b = await _send(alice, bob, room_id, "m.reaction", _reaction(b_root, "👍"))
    alice_edit_1 = await _send(alice, bob, room_id, message, _edit(a_root, "A1"))
    alice_edit_2 = await _send(alice, bob, room_id, message, _edit(a_root, "A2"))
    bob_edit = await _send(bob, alice, room_id, message, _edit(b_root, "B1"))
    # Accepted by both (as Synapse does), applied by neither ("Validity of replacement
    # events"), although it is the newest edit of alice's message.
    bob_edits_a = await _send(bob, alice, room_id, message, _edit(a_root, "stolen"))
    reply_edit = await _send(alice, bob, room_id, message, _edit(alice_in_a, "a1, edited"))
    reference = _text("see alice's root", rel_type="m.reference", event_id=a_root)
    bob_ref = await _send(bob, alice, room_id, message, reference)
    c_root = await _send(alice, bob, room_id, message, _text("alice alone"))
    alice_in_c = await _send(alice, bob, room_id, message, _thread_reply(c_root, "a3"))
    return Sent(
        a_root, b_root, c_root, bob_in_a, alice_in_a, alice_in_b, alice_in_c, bob_on_a,
        alice_on_a, alice_on_b, alice_edit_1, alice_edit_2, bob_edit, bob_edits_a, reply_edit,
        bob_ref,
    )  # fmt: skip


def _ids(bundle: dict[str, Any]) -> dict[str, Any]:
    """A normalised bundle reduced to the IDs in it, as the expectations name them."""
    thread = bundle.get("m.thread")
    return {
        "m.replace": bundle.get("m.replace", {}).get("event_id"),
        "m.thread": None
        if thread is None
        else (thread["count"], thread["latest_event"]["event_id"], thread["latest_event_edit"]),
        "m.reference": bundle.get("m.reference"),
    }


def _expect(
    edit: str | None = None,
    thread: tuple[int, str, str | None] | None = None,
    references: list[str] | None = None,
) -> dict[str, Any]:
    return {"m.replace": edit, "m.thread": thread, "m.reference": references}


async def _served(
    alice: Side, bob: Side, room_id: str, expected: dict[str, dict[str, Any]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Each expected event as each server serves it on /event (checked against /messages
    too), by (server, event ID); their bundles are ``expected`` on both, and agree whole."""
    served: dict[tuple[str, str], dict[str, Any]] = {}
    for side in (alice, bob):
        listed = await _messages(side, room_id)
        for event_id, wanted in expected.items():
            event = await side.get(f"rooms/{quote(room_id)}/event/{quote(event_id)}")
            assert _ids(_bundle(event)) == wanted, (side.name, "/event", event_id, event)
            assert _bundle(listed[event_id]) == _bundle(event), (side.name, "/messages", event_id)
            served[side.name, event_id] = event
    for event_id in expected:
        on_peyvand, on_synapse = served[alice.name, event_id], served[bob.name, event_id]
        assert _event(on_peyvand) == _event(on_synapse), event_id
        assert _bundle(on_peyvand) == _bundle(on_synapse), event_id
    return served


_TAILS: list[tuple[str, ...]] = [
    (),
    ("m.thread",),
    ("m.annotation",),
    ("m.annotation", "m.reaction"),
    ("m.replace",),
    ("m.replace", "m.room.message"),
    ("m.reference",),
]


async def _relation_lists(
    alice: Side, bob: Side, room_id: str, roots: tuple[str, ...]
) -> dict[tuple[str, str], list[str]]:
    """What /relations lists for each root, unfiltered and per type (key ``(root,
    "m.annotation/m.reaction")``, say), recursive (``"recurse"``) and oldest first
    (``"dir=f"``): the same children in the same order on both servers."""
    queries: list[tuple[str, tuple[str, ...], dict[str, str]]] = [
        (root, tail, {}) for root in roots for tail in _TAILS
    ]
    queries += [(root, (), {"recurse": "true"}) for root in roots]
    queries += [(root, (), {"dir": "f"}) for root in roots]
    lists: dict[tuple[str, str], list[str]] = {}
    for root, tail, params in queries:
        on_peyvand = await _relations(alice, room_id, root, *tail, **params)
        on_synapse = await _relations(bob, room_id, root, *tail, **params)
        assert on_peyvand == on_synapse, (root, tail, params)
        key = "/".join(tail) or ("recurse" if "recurse" in params else "dir=f" if params else "")
        lists[root, key] = on_peyvand
    return lists


async def _thread_lists(alice: Side, bob: Side, room_id: str) -> dict[str, list[str]]:
    """GET /threads (include=all, the same on both servers) and each user's
    include=participated: the roots, latest activity first."""
    path = f"/_matrix/client/v1/rooms/{quote(room_id)}/threads"
    lists: dict[str, list[str]] = {}
    for side in (alice, bob):
        for include in ("all", "participated"):
            page = await side.get(path, include=include, limit="50")
            assert "next_batch" not in page, (side.name, include, page)
            lists[f"{side.name} {include}"] = [root["event_id"] for root in page["chunk"]]
    assert lists[f"{alice.name} all"] == lists[f"{bob.name} all"]
    return lists


async def _redact(side: Side, other: Side, room_id: str, event_id: str) -> None:
    """``side`` redacts ``event_id``; back once ``other``'s server serves it redacted."""
    path = f"rooms/{quote(room_id)}/redact/{quote(event_id)}/rel{next(_txns)}"
    (await side.client.request("PUT", path, json={}, token=side.account)).ok()
    for _ in range(SEEN_ATTEMPTS):
        event = await other.get(f"rooms/{quote(room_id)}/event/{quote(event_id)}")
        if "redacted_because" in event.get("unsigned", {}):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{other.name} never saw {side.name}'s redaction of {event_id}")


def _newest_first(*ids: str) -> list[str]:
    return list(reversed(ids))


@pytest.mark.parametrize("host", ["peyvand", "synapse"])
async def test_relations_and_aggregations_agree(
    host: str,
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    synapse: SynapseProcess,
    synapse_client: MatrixClient,
) -> None:
    alice = Side("Peyvand", peyvand_client, await peyvand_client.register(), peyvand.server_name)
    bob = Side("Synapse", synapse_client, await synapse_client.register(), synapse.server_name)
    creator, joiner = (alice, bob) if host == "peyvand" else (bob, alice)
    async with asyncio.timeout(TIMEOUT_SECONDS):
        room_id = await create_room(creator.client, creator.account, preset="public_chat")
        join = f"join/{quote(room_id)}?server_name={quote(creator.server_name)}"
        (await joiner.client.request("POST", join, json={}, token=joiner.account)).ok()
        for side, member in ((alice, bob), (bob, alice)):
            await wait_until_joined(
                side.client, side.account, room_id, member.account.user_id, attempts=600
            )
        s = await _converse(alice, bob, room_id)
        roots = (s.a_root, s.b_root, s.c_root)

        served = await _served(
            alice,
            bob,
            room_id,
            {
                s.a_root: _expect(
                    s.alice_edit_2, (2, s.alice_in_a, s.reply_edit), references=[s.bob_ref]
                ),
                s.b_root: _expect(s.bob_edit, (1, s.alice_in_b, None)),
                s.c_root: _expect(None, (1, s.alice_in_c, None)),
                s.bob_in_a: _expect(),
            },
        )
        # Whether the reader took part: the root's sender or a replier (threading.md).
        for side in (alice, bob):
            participated = {root: _participated(served[side.name, root]) for root in roots}
            assert participated == {s.a_root: True, s.b_root: True, s.c_root: side is alice}

        lists = await _relation_lists(alice, bob, room_id, roots)
        a_children = (
            s.bob_in_a, s.alice_in_a, s.bob_on_a, s.alice_on_a, s.alice_edit_1, s.alice_edit_2,
            s.bob_edits_a, s.bob_ref,
        )  # fmt: skip
        assert lists[s.a_root, ""] == _newest_first(*a_children)
        assert lists[s.a_root, "dir=f"] == list(a_children)
        recursive = (*a_children[:-1], s.reply_edit, s.bob_ref)
        assert lists[s.a_root, "recurse"] == _newest_first(*recursive)
        assert lists[s.a_root, "m.thread"] == _newest_first(s.bob_in_a, s.alice_in_a)
        reactions = _newest_first(s.bob_on_a, s.alice_on_a)
        assert lists[s.a_root, "m.annotation"] == reactions
        assert lists[s.a_root, "m.annotation/m.reaction"] == reactions
        edits = _newest_first(s.alice_edit_1, s.alice_edit_2, s.bob_edits_a)
        assert lists[s.a_root, "m.replace"] == edits
        assert lists[s.a_root, "m.replace/m.room.message"] == edits
        assert lists[s.a_root, "m.reference"] == [s.bob_ref]
        assert lists[s.b_root, ""] == _newest_first(s.alice_in_b, s.alice_on_b, s.bob_edit)
        assert lists[s.c_root, ""] == [s.alice_in_c]

        threads = await _thread_lists(alice, bob, room_id)
        assert threads == {
            "Peyvand all": [s.c_root, s.b_root, s.a_root],
            "Peyvand participated": [s.c_root, s.b_root, s.a_root],
            "Synapse all": [s.c_root, s.b_root, s.a_root],
            "Synapse participated": [s.b_root, s.a_root],
        }

        # Redactions from both sides take what they redacted out of every aggregation:
        # the thread's latest reply (its latest moves back), the newest edit (the one
        # before it applies), a reaction, the reference, a thread's only reply.
        await _redact(alice, bob, room_id, s.alice_in_a)
        await _redact(alice, bob, room_id, s.alice_edit_2)
        await _redact(bob, alice, room_id, s.bob_on_a)
        await _redact(bob, alice, room_id, s.bob_ref)
        await _redact(alice, bob, room_id, s.alice_in_c)
        served = await _served(
            alice,
            bob,
            room_id,
            {
                s.a_root: _expect(s.alice_edit_1, (1, s.bob_in_a, None)),
                s.b_root: _expect(s.bob_edit, (1, s.alice_in_b, None)),
                s.c_root: _expect(),
            },
        )
        lists = await _relation_lists(alice, bob, room_id, roots)
        left = (s.bob_in_a, s.alice_on_a, s.alice_edit_1, s.bob_edits_a)
        assert lists[s.a_root, ""] == _newest_first(*left)
        # The edit of the redacted reply is no longer reached through it.
        assert lists[s.a_root, "recurse"] == _newest_first(*left)
        assert lists[s.a_root, "m.thread"] == [s.bob_in_a]
        assert lists[s.a_root, "m.annotation"] == [s.alice_on_a]
        assert lists[s.a_root, "m.reference"] == []
        assert lists[s.c_root, ""] == []
        threads = await _thread_lists(alice, bob, room_id)
        assert threads["Synapse all"] == [s.b_root, s.a_root]
        assert threads["Synapse participated"] == [s.b_root, s.a_root]
        assert threads["Peyvand participated"] == [s.b_root, s.a_root]


_THREAD_FILTER = '{"room": {"timeline": {"unread_thread_notifications": true}}}'


def _counts(notify: int, highlight: int) -> dict[str, int]:
    return {"notification_count": notify, "highlight_count": highlight}


async def _until_counts(
    side: Side, room_id: str, expected: dict[str, Any], attempts: int = SEEN_ATTEMPTS
) -> None:
    """Poll ``side``'s /sync (unread counts split per thread) until the room's
    ``unread_notifications`` and ``unread_thread_notifications`` are ``expected``, at
    most ``attempts`` times."""
    counts: dict[str, Any] = {}
    for _ in range(attempts):
        body = await side.get("sync", filter=_THREAD_FILTER, timeout="0")
        room = body["rooms"]["join"].get(room_id, {})
        counts = {
            "main": room.get("unread_notifications"),
            "threads": room.get("unread_thread_notifications", {}),
        }
        if counts == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{side.name}: counts {counts}, expected {expected}")


async def _receipt(reader: Side, sender: Side, room_id: str, event_id: str, thread: str) -> None:
    """``sender`` sends a read receipt on ``event_id`` in ``thread``; back once
    ``reader``'s server serves it in /sync with that thread_id."""
    path = f"rooms/{quote(room_id)}/receipt/m.read/{quote(event_id)}"
    json = {"thread_id": thread}
    (await sender.client.request("POST", path, json=json, token=sender.account)).ok()
    user_id = sender.account.user_id
    for _ in range(SEEN_ATTEMPTS):
        body = await reader.get("sync", timeout="0")
        room = body["rooms"]["join"].get(room_id, {})
        for event in room.get("ephemeral", {}).get("events", []):
            receipt = event["content"].get(event_id, {}).get("m.read", {}).get(user_id)
            if event["type"] == "m.receipt" and receipt is not None:
                assert receipt.get("thread_id") == thread, (reader.name, receipt)
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{reader.name} never served {sender.name}'s receipt on {event_id}")


def _mentioning(root: str, side: Side) -> dict[str, Any]:
    user_id = side.account.user_id
    return {**_thread_reply(root, f"{user_id}: look"), "m.mentions": {"user_ids": [user_id]}}


async def _shared_room(host: str, alice: Side, bob: Side) -> str:
    creator, joiner = (alice, bob) if host == "peyvand" else (bob, alice)
    room_id = await create_room(creator.client, creator.account, preset="public_chat")
    join = f"join/{quote(room_id)}?server_name={quote(creator.server_name)}"
    (await joiner.client.request("POST", join, json={}, token=joiner.account)).ok()
    for side, member in ((alice, bob), (bob, alice)):
        await wait_until_joined(
            side.client, side.account, room_id, member.account.user_id, attempts=600
        )
    return room_id


@pytest.mark.parametrize("host", ["peyvand", "synapse"])
async def test_thread_notifications_mirror_synapse(
    host: str,
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    synapse: SynapseProcess,
    synapse_client: MatrixClient,
) -> None:
    """Replies from the other server in one's thread, one mentioning: Peyvand counts
    them for alice as Synapse does for bob in the mirrored thread ("Threaded read
    receipts"): per thread, with the mention's highlight, the main timeline's count left
    alone; a threaded receipt clears that thread's replies up to it only, and reaches
    the other server with its thread_id."""
    alice = Side("Peyvand", peyvand_client, await peyvand_client.register(), peyvand.server_name)
    bob = Side("Synapse", synapse_client, await synapse_client.register(), synapse.server_name)
    message = "m.room.message"
    async with asyncio.timeout(TIMEOUT_SECONDS):
        room_id = await _shared_room(host, alice, bob)
        a_root = await _send(alice, bob, room_id, message, _text("alice's root"))
        b_root = await _send(bob, alice, room_id, message, _text("bob's root"))
        # Each one's main timeline holds one unread message from the other: the roots.
        main = _counts(1, 0)

        bob_1 = await _send(bob, alice, room_id, message, _thread_reply(a_root, "b1"))
        await _send(bob, alice, room_id, message, _mentioning(a_root, alice))
        await _until_counts(alice, room_id, {"main": main, "threads": {a_root: _counts(2, 1)}})
        await _receipt(bob, alice, room_id, bob_1, a_root)
        await _until_counts(alice, room_id, {"main": main, "threads": {a_root: _counts(1, 1)}})

        # The mirror: alice's replies in bob's thread, counted by Synapse.
        alice_1 = await _send(alice, bob, room_id, message, _thread_reply(b_root, "a1"))
        await _send(alice, bob, room_id, message, _mentioning(b_root, bob))
        await _until_counts(bob, room_id, {"main": main, "threads": {b_root: _counts(2, 1)}})
        await _receipt(alice, bob, room_id, alice_1, b_root)
        await _until_counts(
            bob,
            room_id,
            {"main": main, "threads": {b_root: _counts(1, 1)}},
            attempts=SYNAPSE_RECEIPT_ATTEMPTS,
        )


class OtherThreadsCleared(AssertionError):
    """Peyvand's counts for a thread lost what a reply elsewhere did not read."""


async def test_own_reply_in_another_thread_keeps_a_threads_mention(
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    synapse: SynapseProcess,
    synapse_client: MatrixClient,
) -> None:
    """Each is mentioned in their own thread by the other, then replies in the other's
    thread: the mention in their own thread is still unread, and so is the other's root
    in the main timeline. Synapse counts so for bob; Peyvand must for alice."""
    alice = Side("Peyvand", peyvand_client, await peyvand_client.register(), peyvand.server_name)
    bob = Side("Synapse", synapse_client, await synapse_client.register(), synapse.server_name)
    message = "m.room.message"
    async with asyncio.timeout(TIMEOUT_SECONDS):
        room_id = await _shared_room("peyvand", alice, bob)
        a_root = await _send(alice, bob, room_id, message, _text("alice's root"))
        b_root = await _send(bob, alice, room_id, message, _text("bob's root"))
        await _send(bob, alice, room_id, message, _mentioning(a_root, alice))
        await _send(alice, bob, room_id, message, _mentioning(b_root, bob))
        await _send(alice, bob, room_id, message, _thread_reply(b_root, "alice elsewhere"))
        await _send(bob, alice, room_id, message, _thread_reply(a_root, "bob elsewhere"))
        # Each one's own thread holds the other's mention and reply, unread: their own
        # replies were in the other's thread.
        threads = {b_root: _counts(2, 1)}
        await _until_counts(bob, room_id, {"main": _counts(1, 0), "threads": threads})
        threads = {a_root: _counts(2, 1)}
        try:
            # Everything is on Peyvand already (_send waited): the counts are final.
            await _until_counts(
                alice, room_id, {"main": _counts(1, 0), "threads": threads}, attempts=1
            )
        except AssertionError as error:
            raise OtherThreadsCleared(str(error)) from error
