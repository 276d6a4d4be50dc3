"""``unsigned.replaces_state``, ``prev_content`` and ``prev_sender`` of state events
(Client-Server API, "Room event format": ClientEvent ``unsigned``), wherever events are
served: the /sync timeline and state, /messages, /context, /event, /state and /members,
on every backend. The first event of a state key replaces nothing; a redacted replaced
event gives its redacted content."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.rooms import create_room, put_state, shared_room


async def _event(client: MatrixClient, account: Account, room_id: str, event_id: str) -> Any:
    path = f"rooms/{quote(room_id)}/event/{quote(event_id)}"
    return (await client.request("GET", path, token=account)).ok()


def _prev(event: dict[str, Any]) -> dict[str, Any]:
    """The three fields of ``event``'s ``unsigned`` this test is about (those present)."""
    unsigned = event["unsigned"]
    return {
        k: unsigned[k] for k in ("replaces_state", "prev_content", "prev_sender") if k in unsigned
    }


def _by_id(events: list[dict[str, Any]], event_id: str) -> dict[str, Any]:
    found = [e for e in events if e["event_id"] == event_id]
    assert len(found) == 1, (event_id, events)
    return found[0]


async def test_display_name_change_has_prev_content_wherever_served(
    client: MatrixClient,
) -> None:
    alice, bob, room_id = await shared_room(client)
    room = quote(room_id)
    member = ("m.room.member", bob.user_id)
    state = (await client.request("GET", f"rooms/{room}/state", token=bob)).ok()
    join = next(e for e in state if (e["type"], e["state_key"]) == member)
    since = (await client.request("GET", "sync", token=bob, params={"timeout": "0"})).ok()[
        "next_batch"
    ]

    to_a, to_b = [
        await put_state(
            client,
            bob,
            room_id,
            "m.room.member",
            {"membership": "join", "displayname": name},
            bob.user_id,
        )
        for name in ("A", "B")
    ]
    expected = {
        "replaces_state": to_a,
        "prev_content": {"membership": "join", "displayname": "A"},
        "prev_sender": bob.user_id,
    }
    # The first change replaced bob's join.
    first_change = {
        "replaces_state": join["event_id"],
        "prev_content": join["content"],
        "prev_sender": bob.user_id,
    }

    synced = (
        await client.request("GET", "sync", token=alice, params={"since": since, "timeout": "0"})
    ).ok()
    timeline = synced["rooms"]["join"][room_id]["timeline"]["events"]
    assert _prev(_by_id(timeline, to_b)) == expected
    assert _prev(_by_id(timeline, to_a)) == first_change

    page = (
        await client.request(
            "GET", f"rooms/{room}/messages", token=alice, params={"dir": "b", "limit": "10"}
        )
    ).ok()
    assert _prev(_by_id(page["chunk"], to_b)) == expected

    context = (await client.request("GET", f"rooms/{room}/context/{quote(to_b)}", token=alice)).ok()
    assert _prev(context["event"]) == expected
    assert _prev(_by_id(context["events_before"], to_a)) == first_change
    assert _prev(_by_id(context["state"], to_b)) == expected

    assert _prev(await _event(client, alice, room_id, to_b)) == expected

    state = (await client.request("GET", f"rooms/{room}/state", token=alice)).ok()
    assert _prev(_by_id(state, to_b)) == expected
    members = (await client.request("GET", f"rooms/{room}/members", token=alice)).ok()
    assert _prev(_by_id(members["chunk"], to_b)) == expected

    # An initial sync's state section holds the current member event with the same fields.
    initial = (await client.request("GET", "sync", token=alice, params={"timeout": "0"})).ok()
    joined = initial["rooms"]["join"][room_id]
    served = joined["state"]["events"] + joined["timeline"]["events"]
    assert _prev(_by_id(served, to_b)) == expected


async def test_topic_change_and_the_first_event_of_a_key(client: MatrixClient) -> None:
    alice = await client.register()
    room_id = await create_room(client, alice)
    first = await put_state(client, alice, room_id, "m.room.topic", {"topic": "one"})
    second = await put_state(client, alice, room_id, "m.room.topic", {"topic": "two"})

    assert _prev(await _event(client, alice, room_id, first)) == {}
    assert _prev(await _event(client, alice, room_id, second)) == {
        "replaces_state": first,
        "prev_content": {"topic": "one"},
        "prev_sender": alice.user_id,
    }
    state = (await client.request("GET", f"rooms/{quote(room_id)}/state", token=alice)).ok()
    create = next(e for e in state if e["type"] == "m.room.create")
    assert _prev(create) == {}
    # A message is no state event: nothing replaced.
    page = (
        await client.request(
            "GET", f"rooms/{quote(room_id)}/messages", token=alice, params={"dir": "b"}
        )
    ).ok()
    assert all(_prev(e) == {} for e in page["chunk"] if "state_key" not in e)


async def test_redacted_replaced_event_gives_its_redacted_content(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    named = await put_state(
        client,
        bob,
        room_id,
        "m.room.member",
        {"membership": "join", "displayname": "A"},
        bob.user_id,
    )
    renamed = await put_state(
        client,
        bob,
        room_id,
        "m.room.member",
        {"membership": "join", "displayname": "B"},
        bob.user_id,
    )
    # Read once before the redaction, so a cached copy of the replaced event must follow it.
    assert _prev(await _event(client, alice, room_id, renamed))["prev_content"] == {
        "membership": "join",
        "displayname": "A",
    }
    redact = f"rooms/{quote(room_id)}/redact/{quote(named)}/prev-content-1"
    (await client.request("PUT", redact, json={}, token=alice)).ok()

    redacted = {"replaces_state": named, "prev_content": {"membership": "join"}}
    after = await _event(client, bob, room_id, renamed)
    assert _prev(after) == {**redacted, "prev_sender": bob.user_id}
    page = (
        await client.request(
            "GET", f"rooms/{quote(room_id)}/messages", token=bob, params={"dir": "b"}
        )
    ).ok()
    assert _prev(_by_id(page["chunk"], renamed))["prev_content"] == {"membership": "join"}
