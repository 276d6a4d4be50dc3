"""Rooms of versions 1 to 9 on one server ("Room Versions"): created when asked, with the
version's event format and rules, while new rooms stay version 12."""

from __future__ import annotations

import re
from urllib.parse import quote

from harness.client import Account, MatrixClient


async def _room(client: MatrixClient, account: Account, version: str, **body: object) -> str:
    created = await client.request(
        "POST", "createRoom", json={"room_version": version, **body}, token=account
    )
    return str(created.ok()["room_id"])


async def test_every_version_is_advertised_and_12_stays_the_default(
    client: MatrixClient,
) -> None:
    alice = await client.register()
    capabilities = (await client.request("GET", "capabilities", token=alice)).ok()
    versions = capabilities["capabilities"]["m.room_versions"]
    assert versions["default"] == "12"
    assert versions["available"] == {str(n): "stable" for n in range(1, 13)}


async def test_rooms_of_versions_1_to_9_work(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    for version in [str(n) for n in range(1, 10)]:
        room_id = await _room(client, alice, version, preset="public_chat")
        create = (
            await client.request(
                "GET", f"rooms/{quote(room_id, safe='')}/state/m.room.create", token=alice
            )
        ).ok()
        assert create == {"room_version": version, "creator": alice.user_id}
        (await client.request("POST", f"join/{quote(room_id, safe='')}", json={}, token=bob)).ok()
        sent = await client.request(
            "PUT",
            f"rooms/{quote(room_id, safe='')}/send/m.room.message/v{version}",
            json={"msgtype": "m.text", "body": f"hello v{version}"},
            token=bob,
        )
        event_id = sent.ok()["event_id"]
        # Rooms v1/v2: "$opaque:server"; v3: standard Base64; v4+: URL-safe Base64.
        pattern = {
            "1": r"\$[^:]+:.+",
            "2": r"\$[^:]+:.+",
            "3": r"\$[A-Za-z0-9+/]{43}",
        }.get(version, r"\$[A-Za-z0-9_-]{43}")
        assert re.fullmatch(pattern, event_id), (version, event_id)
        event = (
            await client.request(
                "GET",
                f"rooms/{quote(room_id, safe='')}/event/{quote(event_id, safe='')}",
                token=alice,
            )
        ).ok()
        assert event["content"]["body"] == f"hello v{version}"
        # Alice (power 100) redacts Bob's message; in v1/v2 that is an auth rule.
        (
            await client.request(
                "PUT",
                f"rooms/{quote(room_id, safe='')}/redact/{quote(event_id, safe='')}/r{version}",
                json={},
                token=alice,
            )
        ).ok()
        redacted = (
            await client.request(
                "GET",
                f"rooms/{quote(room_id, safe='')}/event/{quote(event_id, safe='')}",
                token=alice,
            )
        ).ok()
        assert redacted["content"] == {}, version


async def test_knocking_needs_version_7(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    for version, allowed in (("6", False), ("7", True)):
        room_id = await _room(client, alice, version)
        rules = await client.request(
            "PUT",
            f"rooms/{quote(room_id, safe='')}/state/m.room.join_rules",
            json={"join_rule": "knock"},
            token=alice,
        )
        rules.ok()
        knock = await client.request("POST", f"knock/{quote(room_id, safe='')}", json={}, token=bob)
        assert (knock.status == 200) is allowed, (version, knock.status, knock.body)
        if not allowed:
            assert knock.body["errcode"] == "M_FORBIDDEN"
