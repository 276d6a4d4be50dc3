"""GET /_matrix/client/v3/notifications over HTTP against a real Peyvand on every backend
(Client-Server API, "Push Notifications": "Listing notifications")."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.rooms import say

HIGHLIGHT = {"set_tweak": "highlight"}


async def join(client: MatrixClient, account: Account, room_id: str) -> None:
    (await client.request("POST", f"join/{quote(room_id)}", json={}, token=account)).ok()


async def listing(client: MatrixClient, account: Account, query: str = "") -> dict[str, Any]:
    page: dict[str, Any] = (
        await client.request("GET", f"notifications{query}", token=account)
    ).ok()
    return page


def bodies(page: dict[str, Any]) -> list[str]:
    return [n["event"]["content"]["body"] for n in page["notifications"]]


async def test_listing_follows_membership_rules_and_receipts(client: MatrixClient) -> None:
    alice, bob, carol, dave = [await client.register() for _ in range(4)]
    created = await client.request(
        "POST", "createRoom", json={"preset": "public_chat"}, token=alice
    )
    room_id: str = created.ok()["room_id"]
    await join(client, bob, room_id)
    await join(client, dave, room_id)
    # Dave mutes the room.
    muted = await client.request(
        "PUT", f"pushrules/global/room/{quote(room_id)}", json={"actions": []}, token=dave
    )
    muted.ok()
    await say(client, room_id, alice, "one")
    await join(client, carol, room_id)
    two = await say(client, room_id, alice, "two")
    three = await say(
        client, room_id, alice, "three", **{"m.mentions": {"user_ids": [bob.user_id]}}
    )
    (await client.request("POST", f"rooms/{quote(room_id)}/leave", json={}, token=carol)).ok()
    await say(client, room_id, alice, "four")
    receipt = f"rooms/{quote(room_id)}/receipt/m.read/{quote(two)}"
    (await client.request("POST", receipt, json={}, token=bob)).ok()

    everything = await listing(client, bob)
    assert bodies(everything) == ["four", "three", "two", "one"]
    assert [n["read"] for n in everything["notifications"]] == [False, False, True, True]
    first = everything["notifications"][0]
    assert first["room_id"] == room_id
    assert first["actions"][0] == "notify"
    assert isinstance(first["ts"], int)
    assert [HIGHLIGHT in n["actions"] for n in everything["notifications"]] == [
        False,
        True,
        False,
        False,
    ]
    assert first["event"]["sender"] == alice.user_id
    assert "room_id" not in first["event"]
    assert "next_token" not in everything

    # Carol was joined for two and three only.
    at_carol = await listing(client, carol)
    assert bodies(at_carol) == ["three", "two"]
    assert at_carol["notifications"][0]["event"]["event_id"] == three
    assert bodies(await listing(client, bob, "?only=highlight")) == ["three"]
    assert bodies(await listing(client, carol, "?only=highlight")) == []
    # Muted, or one's own messages: nothing.
    assert bodies(await listing(client, dave)) == []
    assert bodies(await listing(client, alice)) == []


async def test_pages_and_bad_input(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    created = await client.request(
        "POST", "createRoom", json={"preset": "public_chat"}, token=alice
    )
    room_id: str = created.ok()["room_id"]
    await join(client, bob, room_id)
    for text in ("one", "two", "three", "four", "five"):
        await say(client, room_id, alice, text)

    seen: list[str] = []
    query = "?limit=2"
    for _ in range(4):
        page = await listing(client, bob, query)
        seen.extend(bodies(page))
        if "next_token" not in page:
            break
        query = f"?limit=2&from={quote(page['next_token'])}"
    assert seen == ["five", "four", "three", "two", "one"]
    assert bodies(await listing(client, bob, "?limit=1000")) == seen
    assert bodies(await listing(client, bob, "?limit=0")) == []
    assert bodies(await listing(client, bob, f"?from={2**63 - 1}&limit={2**53 - 1}")) == seen

    too_big = str(2**63)
    for bad in (
        "?from=abc",
        "?from=-5",
        f"?from={too_big}",
        "?from=%C2%B2",
        "?limit=-1",
        "?limit=x",
    ):
        response = await client.request("GET", f"notifications{bad}", token=bob)
        assert response.status == 400, (bad, response.body)
        assert response.body["errcode"] == "M_INVALID_PARAM", response.body


async def test_read_exceptions_stay_listed_as_they_were(client: MatrixClient) -> None:
    alice, bob, dave = [await client.register() for _ in range(3)]
    created = await client.request(
        "POST", "createRoom", json={"preset": "public_chat"}, token=alice
    )
    room_id: str = created.ok()["room_id"]
    await join(client, bob, room_id)
    await join(client, dave, room_id)
    muted = await client.request(
        "PUT", f"pushrules/global/room/{quote(room_id)}", json={"actions": []}, token=dave
    )
    muted.ok()
    await say(client, room_id, alice, "bob, look", **{"m.mentions": {"user_ids": [bob.user_id]}})
    # Each answers: their own event reads everything before it.
    await say(client, room_id, bob, "seen")
    await say(client, room_id, dave, "seen too")

    assert bodies(await listing(client, dave)) == []
    assert bodies(await listing(client, bob, "?only=highlight")) == ["bob, look"]
    # A read receipt after more of alice's messages reads them too, and changes nothing.
    later = await say(
        client, room_id, alice, "bob, again", **{"m.mentions": {"user_ids": [bob.user_id]}}
    )
    for account in (bob, dave):
        path = f"rooms/{quote(room_id)}/receipt/m.read/{quote(later)}"
        (await client.request("POST", path, json={}, token=account)).ok()
    assert bodies(await listing(client, dave)) == []
    highlighted = await listing(client, bob, "?only=highlight")
    assert bodies(highlighted) == ["bob, again", "bob, look"]
    assert all(n["read"] for n in highlighted["notifications"])
