"""Simplified sliding sync (MSC4186) against what a user must not learn or make the server
do: receipts and typing of rooms the user is not joined to, oversized ranges, spaces the
user is not in, invites from ignored users, and idle long-polls on a busy server."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import time
import weakref
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.rooms import put_state
from harness.sliding_sync import (
    create_room,
    join,
    one_list,
    request,
    sliding,
    window,
)
from peyvand.api.client.sliding_sync import merged_ranges
from peyvand.services.accounts.requester import Requester
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.sliding.connections import ConnectionPosition, ConnectionStore
from peyvand.services.sync.sliding.ext_request import parse_extensions
from peyvand.services.sync.sliding.request import SlidingSyncRequest
from peyvand.services.sync.sliding.service import SlidingSyncService, _Pass
from peyvand.services.sync.streams import Stream, StreamToken
from peyvand.types import DeviceID, UserID

_txn = itertools.count(1)
_EPHEMERAL = {"receipts": {"enabled": True}, "typing": {"enabled": True}}


async def send(client: MatrixClient, sender: Account, room_id: str) -> str:
    path = f"rooms/{quote(room_id)}/send/m.room.message/s{next(_txn)}"
    message = {"msgtype": "m.text", "body": "hello"}
    event_id: str = (await client.request("PUT", path, json=message, token=sender)).ok()["event_id"]
    return event_id


async def read(client: MatrixClient, reader: Account, room_id: str, event_id: str) -> None:
    path = f"rooms/{quote(room_id)}/receipt/m.read/{quote(event_id)}"
    (await client.request("POST", path, json={}, token=reader)).ok()


async def type_in(client: MatrixClient, typist: Account, room_id: str) -> None:
    path = f"rooms/{quote(room_id)}/typing/{quote(typist.user_id)}"
    typing = {"typing": True, "timeout": 30_000}
    (await client.request("PUT", path, json=typing, token=typist)).ok()


async def membership(
    client: MatrixClient, actor: Account, room_id: str, action: str, target: Account
) -> None:
    path = f"rooms/{quote(room_id)}/{action}"
    (await client.request("POST", path, json={"user_id": target.user_id}, token=actor)).ok()


def ephemeral_body(**lists: Any) -> dict[str, Any]:
    return {"lists": lists or one_list(timeline_limit=1), "extensions": _EPHEMERAL}


# 1. receipts and typing only of joined rooms ------------------------------------------


async def test_a_banned_or_kicked_user_gets_no_receipts_or_typing(client: MatrixClient) -> None:
    alice, bob, carol = await client.register(), await client.register(), await client.register()
    banned_from = await create_room(client, alice, preset="public_chat")
    kicked_from = await create_room(client, alice, preset="public_chat")
    for room_id in (banned_from, kicked_from):
        await join(client, bob, room_id)
        await join(client, carol, room_id)
    first = await sliding(client, bob, ephemeral_body())
    await membership(client, alice, banned_from, "ban", bob)
    await membership(client, alice, kicked_from, "kick", bob)
    for room_id in (banned_from, kicked_from):
        event_id = await send(client, alice, room_id)
        await read(client, carol, room_id, event_id)
        await type_in(client, carol, room_id)
    later = await sliding(client, bob, ephemeral_body(), first["pos"])
    fresh = await sliding(client, bob, ephemeral_body())
    for response in (later, fresh):
        assert {banned_from, kicked_from} <= set(window(response))
        assert response["extensions"]["receipts"] == {"rooms": {}}
        assert response["extensions"]["typing"] == {"rooms": {}}


async def test_an_invited_user_gets_no_receipts_or_typing(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="private_chat")
    await read(client, alice, room_id, await send(client, alice, room_id))
    await type_in(client, alice, room_id)
    await membership(client, alice, room_id, "invite", bob)
    response = await sliding(client, bob, ephemeral_body())
    assert window(response) == [room_id]
    assert response["extensions"]["receipts"] == {"rooms": {}}
    assert response["extensions"]["typing"] == {"rooms": {}}


async def test_a_rejoined_room_gets_no_receipts_from_while_the_user_was_out(
    client: MatrixClient,
) -> None:
    alice, bob, carol = await client.register(), await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, bob, room_id)
    await join(client, carol, room_id)
    first = await sliding(client, bob, ephemeral_body())
    (await client.request("POST", f"rooms/{quote(room_id)}/leave", json={}, token=bob)).ok()
    left = await sliding(client, bob, ephemeral_body(), first["pos"])
    read_while_out = await send(client, alice, room_id)
    await read(client, carol, room_id, read_while_out)
    await join(client, bob, room_id)
    await send(client, alice, room_id)
    back = await sliding(client, bob, ephemeral_body(), left["pos"])
    receipts = back["extensions"]["receipts"]["rooms"].get(room_id, {"content": {}})
    assert read_while_out not in receipts["content"]


# 6. a room new to the connection: the receipts of its timeline and the user's own ------


async def test_a_new_room_gets_only_its_timeline_receipts_and_the_users_own(
    client: MatrixClient,
) -> None:
    alice, bob, carol = await client.register(), await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, bob, room_id)
    await join(client, carol, room_id)
    older = await send(client, alice, room_id)
    newest = await send(client, alice, room_id)
    await read(client, bob, room_id, older)
    await read(client, alice, room_id, older)
    await read(client, carol, room_id, newest)
    response = await sliding(client, alice, ephemeral_body())
    assert [e["event_id"] for e in response["rooms"][room_id]["timeline"]] == [newest]
    content = response["extensions"]["receipts"]["rooms"][room_id]["content"]
    assert set(content[older]["m.read"]) == {alice.user_id}
    assert set(content[newest]["m.read"]) == {carol.user_id}


# 2. overlapping ranges name each room once ----------------------------------------------


def test_overlapping_ranges_are_merged_adjacent_ones_kept() -> None:
    assert merged_ranges([(12, 15), (3, 10), (0, 5), (0, 5)]) == ((0, 10), (12, 15))
    assert merged_ranges([(4, 10), (2, 3)]) == ((2, 3), (4, 10))
    assert merged_ranges([(0, 2**62), (2**62, 2**63)]) == ((0, 2**63),)


async def test_repeated_ranges_name_each_room_once(client: MatrixClient) -> None:
    alice = await client.register()
    rooms = {await create_room(client, alice) for _ in range(3)}
    config = {"ranges": [[0, 100_000]] * 100, "timeline_limit": 0, "required_state": []}
    lists = {f"l{n}": config for n in range(10)}
    response = await sliding(client, alice, {"lists": lists})
    for name in lists:
        ops = response["lists"][name]["ops"]
        assert [op["range"] for op in ops] == [[0, 100_000]]
        assert sorted(ops[0]["room_ids"]) == sorted(rooms)


# 3. spaces: only those the user is joined to, at most 100 ------------------------------


async def test_a_space_the_user_is_not_in_filters_nothing_in(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    space = await create_room(
        client, alice, preset="private_chat", creation_content={"type": "m.space"}
    )
    child = await create_room(client, alice, preset="public_chat")
    via = {"via": [alice.user_id.partition(":")[2]]}
    await put_state(client, alice, space, "m.space.child", via, child)
    await join(client, bob, child)
    in_space = one_list(timeline_limit=0, filters={"spaces": [space]})
    # Bob is not in the space (invited, then refused): it does not tell him its children.
    assert (await sliding(client, bob, {"lists": in_space}))["lists"]["all"]["count"] == 0
    await membership(client, alice, space, "invite", bob)
    assert (await sliding(client, bob, {"lists": in_space}))["lists"]["all"]["count"] == 0
    await join(client, bob, space)
    joined = await sliding(client, bob, {"lists": in_space})
    assert window(joined) == [child]
    # The same spaces in many lists are read once, and answered alike.
    many = {f"l{n}": in_space["all"] for n in range(20)}
    answered = await sliding(client, bob, {"lists": many})
    assert all(window(answered, name) == [child] for name in many)


async def test_more_than_100_spaces_are_refused(client: MatrixClient) -> None:
    alice = await client.register()
    spaces = [f"!s{n}:example.test" for n in range(101)]
    body = {"lists": one_list(filters={"spaces": spaces})}
    response = await request(client, alice, body)
    assert response.status == 400 and response.body["errcode"] == "M_INVALID_PARAM"


# 4. invites from ignored users ------------------------------------------------------------


async def test_invites_from_ignored_users_are_not_listed(client: MatrixClient) -> None:
    alice, bob, carol = await client.register(), await client.register(), await client.register()
    from_alice = await create_room(client, alice, preset="private_chat")
    from_carol = await create_room(client, carol, preset="private_chat")
    await membership(client, alice, from_alice, "invite", bob)
    await membership(client, carol, from_carol, "invite", bob)
    path = f"user/{quote(bob.user_id)}/account_data/m.ignored_user_list"
    ignore: dict[str, Any] = {"ignored_users": {alice.user_id: {}}}
    (await client.request("PUT", path, json=ignore, token=bob)).ok()
    body = {
        "lists": one_list(timeline_limit=0),
        "room_subscriptions": {from_alice: {"timeline_limit": 1, "required_state": []}},
    }
    response = await sliding(client, bob, body)
    assert window(response) == [from_carol]
    assert response["lists"]["all"]["count"] == 1
    assert from_alice not in response["rooms"]


# 5. an idle long-poll on a busy server ----------------------------------------------------


def _long_poll(
    compute: Callable[[Notifier, int], bool],
) -> tuple[SlidingSyncService, Notifier, Requester, str]:
    """A service whose computation is ``compute(notifier, n)`` (its ``n``-th; whether
    the rooms have news), and a ``pos`` to wait from."""
    notifier = Notifier(StreamToken())
    connections = ConnectionStore()
    requester = Requester(UserID("@idle:example.test"), DeviceID("D"), 1)
    key = (requester.user_id, requester.device_id, "")
    number = connections.record(key, None, ConnectionPosition({}, {}))
    nothing: Any = None
    extensions = SimpleNamespace(
        has_news=lambda request, since, upto: False,
        respond=_no_extensions,
    )
    service = SlidingSyncService(
        nothing,
        nothing,
        notifier,
        nothing,
        nothing,
        nothing,
        extensions,
        is_mine=lambda user_id: True,
        is_partial=lambda room_id: False,
        connections=connections,
    )
    computed = itertools.count()

    async def fake_compute(*args: Any) -> Any:
        await asyncio.sleep(0.005)
        news = compute(notifier, next(computed))
        await asyncio.sleep(0.005)
        return _Pass({}, {}, [], {}, frozenset(), ConnectionPosition({}, {}), frozenset(), news)

    service._compute = fake_compute  # type: ignore[method-assign,assignment]
    return service, notifier, requester, f"{number}/{StreamToken().serialize()}"


async def _no_extensions(*args: Any, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    return {}, {}


_EMPTY = SlidingSyncRequest(
    conn_id=None, lists={}, room_subscriptions={}, extensions=parse_extensions({})
)


async def test_events_elsewhere_do_not_make_a_long_poll_compute_again() -> None:
    computes: list[int] = []

    def busy(notifier: Notifier, n: int) -> bool:
        computes.append(n)
        # Someone else's room gets an event during every computation.
        notifier.advance(Stream.EVENTS, notifier.current_token.events + 1, ["@busy:example.test"])
        return False

    service, _, requester, pos = _long_poll(busy)
    await service.sync(requester, _EMPTY, pos, 300)
    # Once at the start, once at the timeout.
    assert len(computes) <= 2, len(computes)


async def test_a_change_for_the_user_during_a_computation_is_not_missed() -> None:
    def own(notifier: Notifier, n: int) -> bool:
        if n == 0:
            notifier.advance(Stream.EVENTS, 1, ["@idle:example.test"])
        return n > 0

    service, _, requester, pos = _long_poll(own)
    started = time.monotonic()
    await service.sync(requester, _EMPTY, pos, 10_000)
    assert time.monotonic() - started < 5


async def _woken_once(
    compute: Callable[[Notifier, int], bool], timeout_ms: int
) -> tuple[float, list[int]]:
    """A long-poll woken once for its user after its first computation: how long it
    took and which computations ran."""
    computes: list[int] = []

    def counted(notifier: Notifier, n: int) -> bool:
        computes.append(n)
        return compute(notifier, n)

    service, notifier, requester, pos = _long_poll(counted)
    started = time.monotonic()
    poll = asyncio.ensure_future(service.sync(requester, _EMPTY, pos, timeout_ms))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if computes:
            break
    await asyncio.sleep(0.05)  # the first pass had no news: the poll waits
    assert not poll.done()
    notifier.advance(Stream.TYPING, 1, ["@idle:example.test"])
    await asyncio.wait_for(poll, 15)
    return time.monotonic() - started, computes


async def test_a_change_for_the_user_during_a_woken_pass_is_not_missed() -> None:
    # A woken pass computes before it registers to wait again: a change for the user
    # meanwhile makes it compute once more.
    def own(notifier: Notifier, n: int) -> bool:
        if n == 1:
            notifier.advance(Stream.EVENTS, 1, ["@idle:example.test"])
        return n > 1

    seconds, computes = await _woken_once(own, 10_000)
    assert seconds < 5 and computes == [0, 1, 2]


async def test_a_woken_pass_without_news_on_a_busy_server_computes_once_more() -> None:
    def busy(notifier: Notifier, n: int) -> bool:
        notifier.advance(Stream.EVENTS, notifier.current_token.events + 1, ["@busy:example.test"])
        return False

    _, computes = await _woken_once(busy, 400)
    # At the start, woken, once more (the server moved), at the timeout.
    assert len(computes) <= 4, computes


class _Lists(dict[str, Any]):
    """A pass's lists that can be watched with a weak reference."""


async def test_a_waiting_long_poll_holds_none_of_its_last_computation() -> None:
    computed: list[weakref.ref[_Lists]] = []

    def quiet(notifier: Notifier, n: int) -> bool:
        return n > 0

    service, notifier, requester, pos = _long_poll(quiet)
    fake_compute = service._compute

    async def watched_compute(*args: Any) -> Any:
        result = await fake_compute(*args)
        lists = _Lists(all={"count": 0, "ops": []})
        computed.append(weakref.ref(lists))
        return dataclasses.replace(result, lists=lists)

    service._compute = watched_compute  # type: ignore[method-assign,assignment]
    poll = asyncio.ensure_future(service.sync(requester, _EMPTY, pos, 10_000))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if computed:
            break
    await asyncio.sleep(0.05)  # the first pass had no news: the poll waits
    assert not poll.done()
    gc.collect()
    assert computed[0]() is None, "a waiting long-poll kept its last computation"
    notifier.advance(Stream.EVENTS, 1, ["@idle:example.test"])
    response = await asyncio.wait_for(poll, 5)
    assert response["lists"] == {"all": {"count": 0, "ops": []}}
