"""Odd but well-formed sliding sync requests are answered, never with a 500: unknown or
malformed room IDs in subscriptions and filters, odd state keys, extreme ranges and
timeouts (MSC4186: rooms the user cannot see "should be ignored by the server")."""

from __future__ import annotations

from typing import Any

import pytest

from harness.client import MatrixClient
from harness.rooms import create_room
from harness.sliding_sync import one_list, request

_PARAMS = {"timeline_limit": 1, "required_state": []}


@pytest.mark.parametrize(
    "body",
    [
        {"room_subscriptions": {"": _PARAMS, "not a room": _PARAMS, "!x:" + "y" * 500: _PARAMS}},
        {
            "lists": one_list(
                required_state=[
                    ["m.room.member", "@nocolon"],
                    ["m.room.member", "nouser"],
                    ["*", "@someone:elsewhere.test"],
                    ["", ""],
                    ["$LAZY", "$ME"],
                ]
            )
        },
        {"lists": one_list(filters={"spaces": ["", "!nope:nowhere.test", "not a room"]})},
        {"lists": one_list(filters={"room_types": [None, ""], "not_tags": [""]})},
        {"lists": {"a": {"ranges": [[0, 2**62], [2**62, 2**63]], **_PARAMS}}},
        {"lists": {"a": {"ranges": [], **_PARAMS}}},
        {"lists": {"": {"ranges": [[0, 0]], **_PARAMS}}},
        {"extensions": {"unknown": {"enabled": True}, "typing": {"enabled": True, "lists": ["x"]}}},
    ],
)
async def test_odd_requests_are_answered(client: MatrixClient, body: dict[str, Any]) -> None:
    alice = await client.register()
    await create_room(client, alice)
    first = await request(client, alice, body)
    assert first.status == 200, first.body
    again = await request(client, alice, body, first.body["pos"], timeout_ms=10)
    assert again.status == 200, again.body


@pytest.mark.parametrize("timeout_text", ["-5", "abc", str(2**70)])
async def test_an_odd_timeout_is_a_matrix_error_or_bounded(
    client: MatrixClient, timeout_text: str
) -> None:
    alice = await client.register()
    first = (await request(client, alice, {"lists": one_list()})).ok()
    response = await client.request(
        "POST",
        "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
        json={"lists": one_list()},
        token=alice,
        params={"pos": first["pos"], "timeout": timeout_text},
    )
    assert response.status in (200, 400), response.body
    if response.status == 400:
        assert response.body["errcode"] in ("M_INVALID_PARAM", "M_BAD_JSON")
