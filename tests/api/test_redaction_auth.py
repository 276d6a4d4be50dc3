"""Who may redact what, over HTTP, for room versions 10, 11 and 12 on every backend.

Client-Server API, "Redactions", and rooms v3+ "Handling redactions": anyone may redact
their own events; another user's event needs the room's redact level. The rule holds
whichever endpoint sends the ``m.room.redaction``: ``/redact``, ``/send`` (with
``redacts`` in the content) or ``createRoom``'s ``initial_state``. A redaction never
reaches into another room (400) and unknown events are 404. A refused redaction changes
nothing: the event keeps its content in ``GET /event``, ``/state`` and ``/sync``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from harness.client import Account, MatrixClient, Response, new_session
from harness.rooms import say
from harness.server import HomeserverProcess

ROOM_VERSIONS = ["10", "11", "12"]
_txn = itertools.count()


@dataclass(frozen=True, slots=True)
class Room:
    """A public room named "original" of ``owner`` (power 100, or creator in v12), with
    ``moderator`` (power 50, the default redact level) and ``member`` (power 0) joined."""

    room_id: str
    owner: Account
    moderator: Account
    member: Account


@pytest.fixture(scope="module")
async def accounts(homeserver: HomeserverProcess) -> AsyncIterator[tuple[Account, ...]]:
    async with new_session() as session:
        client = MatrixClient(session, homeserver.base_url)
        yield (await client.register(), await client.register(), await client.register())


@pytest.fixture(params=ROOM_VERSIONS)
async def room(
    request: pytest.FixtureRequest, client: MatrixClient, accounts: tuple[Account, ...]
) -> Room:
    owner, moderator, member = accounts
    room_id = await _create_room(client, owner, request.param, moderator)
    for account in (moderator, member):
        (await client.request("POST", f"rooms/{q(room_id)}/join", json={}, token=account)).ok()
    return Room(room_id, owner, moderator, member)


def q(value: str) -> str:
    return quote(value, safe="")


async def _create_room(
    client: MatrixClient,
    owner: Account,
    room_version: str,
    moderator: Account,
    **options: Any,
) -> str:
    # The override replaces "users" whole; v12 creators have no entry (infinite level).
    levels = {moderator.user_id: 50}
    if room_version != "12":
        levels[owner.user_id] = 100
    body = {
        "room_version": room_version,
        "preset": "public_chat",
        "name": "original",
        "power_level_content_override": {"users": levels},
        **options,
    }
    room_id: str = (await client.request("POST", "createRoom", json=body, token=owner)).ok()[
        "room_id"
    ]
    return room_id


async def _send_redaction(
    client: MatrixClient, room_id: str, account: Account, content: dict[str, Any]
) -> Response:
    """``PUT /send/m.room.redaction/{txnId}``, the path that skipped the check."""
    return await client.request(
        "PUT",
        f"rooms/{q(room_id)}/send/m.room.redaction/s{next(_txn)}",
        json=content,
        token=account,
    )


async def _redact(client: MatrixClient, room_id: str, account: Account, target: str) -> Response:
    return await client.request(
        "PUT", f"rooms/{q(room_id)}/redact/{q(target)}/r{next(_txn)}", json={}, token=account
    )


async def _event(client: MatrixClient, room_id: str, reader: Account, event_id: str) -> Any:
    response = await client.request("GET", f"rooms/{q(room_id)}/event/{q(event_id)}", token=reader)
    return response.ok()


async def _synced(client: MatrixClient, room_id: str, reader: Account, event_id: str) -> Any:
    """``event_id`` as an initial /sync of ``reader`` shows it in the room's timeline."""
    sync_filter = {"room": {"timeline": {"limit": 50}}}
    response = await client.request(
        "GET", "sync", token=reader, params={"filter": json.dumps(sync_filter), "timeout": "0"}
    )
    timeline = response.ok()["rooms"]["join"][room_id]["timeline"]["events"]
    return next(e for e in timeline if e["event_id"] == event_id)


async def _name_event_id(client: MatrixClient, room: Room) -> str:
    state = (await client.request("GET", f"rooms/{q(room.room_id)}/state", token=room.owner)).ok()
    event_id: str = next(e["event_id"] for e in state if e["type"] == "m.room.name")
    return event_id


def _assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


async def _assert_intact(
    client: MatrixClient, room: Room, event_id: str, content: dict[str, Any]
) -> None:
    """Everyone still sees ``event_id`` with ``content``, by ID and in /sync."""
    for reader in (room.owner, room.member):
        event = await _event(client, room.room_id, reader, event_id)
        assert event["content"] == content
        assert "redacted_because" not in event.get("unsigned", {})
        synced = await _synced(client, room.room_id, reader, event_id)
        assert synced["content"] == content


async def _assert_redacted(client: MatrixClient, room: Room, event_id: str) -> None:
    for reader in (room.owner, room.member):
        event = await _event(client, room.room_id, reader, event_id)
        assert event["content"] == {}
        assert "redacted_because" in event["unsigned"]
        synced = await _synced(client, room.room_id, reader, event_id)
        assert synced["content"] == {}


async def test_member_without_power_cannot_redact_anothers_message_via_send(
    client: MatrixClient, room: Room
) -> None:
    message = await say(client, room.room_id, room.owner, "the owner's words")
    refused = await _send_redaction(client, room.room_id, room.member, {"redacts": message})
    _assert_error(refused, 403, "M_FORBIDDEN")
    await _assert_intact(client, room, message, {"msgtype": "m.text", "body": "the owner's words"})
    # /redact refuses it the same way (its behaviour is unchanged).
    _assert_error(await _redact(client, room.room_id, room.member, message), 403, "M_FORBIDDEN")
    await _assert_intact(client, room, message, {"msgtype": "m.text", "body": "the owner's words"})


async def test_member_without_power_cannot_redact_the_room_name_via_send(
    client: MatrixClient, room: Room
) -> None:
    name = await _name_event_id(client, room)
    refused = await _send_redaction(client, room.room_id, room.member, {"redacts": name})
    _assert_error(refused, 403, "M_FORBIDDEN")
    _assert_error(await _redact(client, room.room_id, room.member, name), 403, "M_FORBIDDEN")
    await _assert_intact(client, room, name, {"name": "original"})
    state = await client.request(
        "GET", f"rooms/{q(room.room_id)}/state/m.room.name", token=room.member
    )
    assert state.ok() == {"name": "original"}


async def test_own_message_may_be_redacted_via_send_and_redact(
    client: MatrixClient, room: Room
) -> None:
    first = await say(client, room.room_id, room.member, "regretted")
    second = await say(client, room.room_id, room.member, "regretted too")
    sent = await _send_redaction(
        client, room.room_id, room.member, {"redacts": first, "reason": "typo"}
    )
    redaction_id = sent.ok()["event_id"]
    await _assert_redacted(client, room, first)
    redaction = await _event(client, room.room_id, room.owner, redaction_id)
    assert redaction["redacts"] == first
    assert redaction["content"]["reason"] == "typo"
    (await _redact(client, room.room_id, room.member, second)).ok()
    await _assert_redacted(client, room, second)


async def test_moderator_may_redact_others_events_via_send(
    client: MatrixClient, room: Room
) -> None:
    message = await say(client, room.room_id, room.member, "to be moderated")
    (await _send_redaction(client, room.room_id, room.moderator, {"redacts": message})).ok()
    await _assert_redacted(client, room, message)
    name = await _name_event_id(client, room)
    (await _send_redaction(client, room.room_id, room.moderator, {"redacts": name})).ok()
    await _assert_redacted(client, room, name)
    other = await say(client, room.room_id, room.owner, "the owner's, moderated by /redact")
    (await _redact(client, room.room_id, room.moderator, other)).ok()
    await _assert_redacted(client, room, other)


async def test_redaction_of_an_event_of_another_room_is_400(
    client: MatrixClient, room: Room
) -> None:
    """The owner has the redact level in both rooms; still no redaction reaches across."""
    other_room = await _create_room(client, room.owner, "12", room.moderator)
    elsewhere = await say(client, other_room, room.owner, "in another room")
    via_send = await _send_redaction(client, room.room_id, room.owner, {"redacts": elsewhere})
    _assert_error(via_send, 400, "M_INVALID_PARAM")
    _assert_error(
        await _redact(client, room.room_id, room.owner, elsewhere), 400, "M_INVALID_PARAM"
    )
    event = await _event(client, other_room, room.owner, elsewhere)
    assert event["content"] == {"msgtype": "m.text", "body": "in another room"}


async def test_initial_state_cannot_redact(client: MatrixClient, room: Room) -> None:
    """createRoom's initial_state creates events like any other path: an m.room.redaction
    there names an event of another room (the new room has none of its own yet)."""
    message = await say(client, room.room_id, room.owner, "safe from initial_state")
    refused = await client.request(
        "POST",
        "createRoom",
        json={
            "initial_state": [
                {"type": "m.room.redaction", "state_key": "", "content": {"redacts": message}}
            ]
        },
        token=room.member,
    )
    _assert_error(refused, 400, "M_INVALID_PARAM")
    await _assert_intact(
        client, room, message, {"msgtype": "m.text", "body": "safe from initial_state"}
    )


async def test_unknown_or_missing_target(client: MatrixClient, room: Room) -> None:
    for account in (room.member, room.owner):
        unknown = await _send_redaction(client, room.room_id, account, {"redacts": "$unknown"})
        _assert_error(unknown, 404, "M_NOT_FOUND")
        _assert_error(await _redact(client, room.room_id, account, "$unknown"), 404, "M_NOT_FOUND")
        missing = await _send_redaction(client, room.room_id, account, {"reason": "no target"})
        _assert_error(missing, 400, "M_MISSING_PARAM")


async def test_create_event_is_never_redacted(client: MatrixClient, room: Room) -> None:
    state = (await client.request("GET", f"rooms/{q(room.room_id)}/state", token=room.owner)).ok()
    create = next(e for e in state if e["type"] == "m.room.create")
    for account in (room.owner, room.moderator):
        refused = await _send_redaction(
            client, room.room_id, account, {"redacts": create["event_id"]}
        )
        _assert_error(refused, 403, "M_FORBIDDEN")
        _assert_error(
            await _redact(client, room.room_id, account, create["event_id"]), 403, "M_FORBIDDEN"
        )
    event = await _event(client, room.room_id, room.owner, create["event_id"])
    assert event["content"] == create["content"]
