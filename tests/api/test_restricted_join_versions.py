"""Restricted join rules only where the room version has them (rooms v8 "Authorization
rules" 5.3.5: ``restricted`` from v8, ``knock_restricted`` from v10).

In an older version the rule is unknown and lets no one in: the join is refused by the
auth rules (403 ``M_FORBIDDEN``), and no ``join_authorised_via_users_server`` is looked
for, so a user of none of the allowed rooms does not get ``M_UNABLE_TO_AUTHORISE_JOIN``.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from harness.client import Account, MatrixClient, Response
from harness.rooms import create_room


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


async def restricted_room(
    client: MatrixClient, owner: Account, version: str, rule: str, allowed: str
) -> str:
    room_id = await create_room(client, owner, room_version=version, preset="private_chat")
    content = {"join_rule": rule, "allow": [{"type": "m.room_membership", "room_id": allowed}]}
    path = f"rooms/{quote(room_id)}/state/m.room.join_rules/"
    (await client.request("PUT", path, json=content, token=owner)).ok()
    return room_id


async def join(client: MatrixClient, room_id: str, account: Account) -> Response:
    return await client.request("POST", f"rooms/{quote(room_id)}/join", json={}, token=account)


@pytest.mark.parametrize(("version", "rule"), [("7", "restricted"), ("9", "knock_restricted")])
async def test_restricted_rule_unknown_to_the_version_lets_no_one_in(
    client: MatrixClient, version: str, rule: str
) -> None:
    alice, member, outsider = [await client.register() for _ in range(3)]
    space = await create_room(client, alice, preset="public_chat")
    (await join(client, space, member)).ok()
    room_id = await restricted_room(client, alice, version, rule, space)
    assert_error(await join(client, room_id, outsider), 403, "M_FORBIDDEN")
    assert_error(await join(client, room_id, member), 403, "M_FORBIDDEN")
    members = (
        await client.request("GET", f"rooms/{quote(room_id)}/joined_members", token=alice)
    ).ok()
    assert set(members["joined"]) == {alice.user_id}


@pytest.mark.parametrize(("version", "rule"), [("8", "restricted"), ("10", "knock_restricted")])
async def test_restricted_rule_of_the_version_names_an_authoriser(
    client: MatrixClient, version: str, rule: str
) -> None:
    alice, member, outsider = [await client.register() for _ in range(3)]
    space = await create_room(client, alice, preset="public_chat")
    (await join(client, space, member)).ok()
    room_id = await restricted_room(client, alice, version, rule, space)
    assert_error(await join(client, room_id, outsider), 400, "M_UNABLE_TO_AUTHORISE_JOIN")
    (await join(client, room_id, member)).ok()
    event = (
        await client.request(
            "GET", f"rooms/{quote(room_id)}/state/m.room.member/{member.user_id}", token=alice
        )
    ).ok()
    assert event["join_authorised_via_users_server"] == alice.user_id
