"""Erasure takes an erased user's events out of relations, as a redaction does (their
content, ``m.relates_to`` included, is gone): on every backend, a thread whose latest
reply was theirs falls back to the newest remaining one (or leaves ``/threads``), its
summary no longer counts it, and their reactions and references leave ``/relations``
and the bundled aggregations."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.rooms import create_room, say

V1 = "/_matrix/client/v1"


async def _erase(client: MatrixClient, account: Account) -> None:
    """POST /account/deactivate with ``erase`` through UIA with the account's password."""
    first = await client.request("POST", "account/deactivate", json={"erase": True}, token=account)
    assert first.status == 401 and "session" in first.body, first.body
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": account.user_id},
        "password": account.password,
        "session": first.body["session"],
    }
    done = await client.request(
        "POST", "account/deactivate", json={"erase": True, "auth": auth}, token=account
    )
    done.ok()


async def _get(client: MatrixClient, account: Account, path: str, **params: str) -> Any:
    response = await client.request("GET", path, token=account, params=params)
    return response.ok()


async def test_erased_replies_leave_their_threads(client: MatrixClient) -> None:
    alice, bob, carol = [await client.register() for _ in range(3)]
    room_id = await create_room(client, alice, preset="public_chat")
    for member in (bob, carol):
        (await client.request("POST", f"join/{quote(room_id)}", json={}, token=member)).ok()
    root = await say(client, room_id, alice, "root")
    lonely = await say(client, room_id, alice, "only bob answers")

    def thread_of(parent: str) -> dict[str, Any]:
        return {"m.relates_to": {"rel_type": "m.thread", "event_id": parent}}

    kept = await say(client, room_id, carol, "carol's reply", **thread_of(root))
    await say(client, room_id, bob, "bob's reply", **thread_of(lonely))
    erased = await say(client, room_id, bob, "bob's reply, the latest", **thread_of(root))
    for event_type, relates in (
        ("m.reaction", {"rel_type": "m.annotation", "event_id": root, "key": "👍"}),
        ("org.example.note", {"rel_type": "m.reference", "event_id": root}),
    ):
        sent = await client.request(
            "PUT",
            f"rooms/{quote(room_id)}/send/{event_type}/erasure-{event_type}",
            json={"m.relates_to": relates},
            token=bob,
        )
        sent.ok()

    threads_path = f"{V1}/rooms/{quote(room_id)}/threads"
    before = await _get(client, alice, threads_path)
    assert [e["event_id"] for e in before["chunk"]] == [root, lonely]
    summary = before["chunk"][0]["unsigned"]["m.relations"]["m.thread"]
    assert (summary["count"], summary["latest_event"]["event_id"]) == (2, erased)

    await _erase(client, bob)

    after = await _get(client, alice, threads_path)
    assert [e["event_id"] for e in after["chunk"]] == [root]
    summary = after["chunk"][0]["unsigned"]["m.relations"]["m.thread"]
    assert (summary["count"], summary["latest_event"]["event_id"]) == (1, kept)
    served = await _get(client, carol, f"rooms/{quote(room_id)}/event/{quote(root)}")
    bundle = served["unsigned"]["m.relations"]
    assert bundle.keys() == {"m.thread"}
    thread = bundle["m.thread"]
    assert (thread["count"], thread["latest_event"]["event_id"]) == (1, kept)
    listed = await _get(client, alice, f"{V1}/rooms/{quote(room_id)}/relations/{quote(root)}")
    assert [e["event_id"] for e in listed["chunk"]] == [kept]
    assert await _get(client, alice, f"{V1}/rooms/{quote(room_id)}/relations/{quote(lonely)}") == {
        "chunk": []
    }
