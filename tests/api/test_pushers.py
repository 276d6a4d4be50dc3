"""Pushers over HTTP on every backend (Client-Server API, "Push Notifications":
GET /pushers, POST /pushers/set)."""

from __future__ import annotations

from typing import Any

from harness.client import Account, MatrixClient, Response


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


def pusher(pushkey: object = "a_push_key", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "profile_tag": "tag",
        "kind": "http",
        "app_id": "sytest",
        "app_display_name": "sytest_display_name",
        "device_display_name": "device_display_name",
        "pushkey": pushkey,
        "lang": "en",
        "data": {"url": "https://push.example/_matrix/push/v1/notify", "format": "event_id_only"},
    }
    body.update(changes)
    return body


async def pushers(client: MatrixClient, account: Account) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await client.request("GET", "pushers", token=account)).ok()[
        "pushers"
    ]
    return found


async def set_pusher(client: MatrixClient, account: Account, body: dict[str, Any]) -> Response:
    return await client.request("POST", "pushers/set", json=body, token=account)


async def test_set_replace_and_delete(client: MatrixClient) -> None:
    alice = await client.register()
    assert await pushers(client, alice) == []
    (await set_pusher(client, alice, pusher())).ok()
    expected = pusher()
    assert await pushers(client, alice) == [expected]
    (await set_pusher(client, alice, pusher(lang="fr"))).ok()
    assert [p["lang"] for p in await pushers(client, alice)] == ["fr"]
    (await set_pusher(client, alice, pusher("another"))).ok()
    assert {p["pushkey"] for p in await pushers(client, alice)} == {"a_push_key", "another"}
    gone = {"kind": None, "app_id": "sytest", "pushkey": "another"}
    (await set_pusher(client, alice, gone)).ok()
    assert [p["pushkey"] for p in await pushers(client, alice)] == ["a_push_key"]


async def test_same_pushkey_moves_between_users_unless_appended(client: MatrixClient) -> None:
    alice, bob, carol = await client.register(), await client.register(), await client.register()
    shared = f"shared-{alice.user_id}"
    (await set_pusher(client, alice, pusher(shared))).ok()
    (await set_pusher(client, bob, pusher(shared))).ok()
    assert await pushers(client, alice) == []
    (await set_pusher(client, carol, pusher(shared, append=True))).ok()
    assert len(await pushers(client, bob)) == 1 and len(await pushers(client, carol)) == 1


async def test_pushers_go_with_their_device(client: MatrixClient) -> None:
    """A password change logging other devices out removes their pushers (sytest's
    14account/01change-password), the current device's stay; logout removes its own."""
    alice = await client.register()
    other = await client.login(alice.user_id)
    (await set_pusher(client, other, pusher("from-other"))).ok()
    (await set_pusher(client, alice, pusher("from-alice"))).ok()
    body: dict[str, Any] = {"new_password": "a new secret"}
    first = await client.request("POST", "account/password", json=body, token=alice)
    body["auth"] = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": alice.user_id},
        "password": alice.password,
        "session": first.body["session"],
    }
    (await client.request("POST", "account/password", json=body, token=alice)).ok()
    assert [p["pushkey"] for p in await pushers(client, alice)] == ["from-alice"]
    (await client.request("POST", "logout", json={}, token=alice)).ok()
    again = await client.login(alice.user_id, "a new secret")
    assert await pushers(client, again) == []


INVALID = "M_INVALID_PARAM"


async def test_invalid_pushers(client: MatrixClient) -> None:
    alice = await client.register()
    cases: list[tuple[dict[str, Any], str]] = [
        ({k: v for k, v in pusher().items() if k != "pushkey"}, "M_MISSING_PARAM"),
        ({k: v for k, v in pusher().items() if k != "kind"}, "M_MISSING_PARAM"),
        ({k: v for k, v in pusher().items() if k not in ("lang", "data")}, "M_MISSING_PARAM"),
        (pusher(kind="email"), "M_INVALID_PARAM"),
        (pusher(app_id="a" * 65), "M_INVALID_PARAM"),
        (pusher("k" * 513), "M_INVALID_PARAM"),
        (pusher(data={"format": "event_id_only"}), "M_INVALID_PARAM"),
        (pusher(data={"url": "https://push.example/elsewhere"}), "M_INVALID_PARAM"),
        (pusher(data={"url": "ftp://push.example/_matrix/push/v1/notify"}), "M_INVALID_PARAM"),
        # Parsed as the sender parses it: a port in range, a host, a valid IPv6 literal.
        (pusher(data={"url": "http://push.example:99999/_matrix/push/v1/notify"}), INVALID),
        (pusher(data={"url": "http://push.example:0/_matrix/push/v1/notify"}), INVALID),
        (pusher(data={"url": "http:///_matrix/push/v1/notify"}), INVALID),
        (pusher(data={"url": "http://[::1/_matrix/push/v1/notify"}), INVALID),
        (pusher(data={"url": "http://push example/_matrix/push/v1/notify"}), INVALID),
        (pusher(data="nope"), "M_BAD_JSON"),
        (pusher(append="yes"), "M_BAD_JSON"),
        (pusher(pushkey=5), "M_BAD_JSON"),
    ]
    for body, errcode in cases:
        assert_error(await set_pusher(client, alice, body), 400, errcode)
    assert await pushers(client, alice) == []
    assert (await client.request("GET", "pushers", token=None)).status == 401


async def test_pushers_per_user_are_capped(client: MatrixClient) -> None:
    """``push.max_pushers_per_user`` (20 by default): one more is 400 M_INVALID_PARAM;
    replacing one, or adding one after a deletion, still works; other users are apart."""
    alice, bob = await client.register(), await client.register()
    for n in range(20):
        (await set_pusher(client, alice, pusher(f"key-{n}-{alice.user_id}"))).ok()
    assert_error(await set_pusher(client, alice, pusher(f"one-more-{alice.user_id}")), 400, INVALID)
    (await set_pusher(client, alice, pusher(f"key-0-{alice.user_id}", lang="fr"))).ok()
    gone = {"kind": None, "app_id": "sytest", "pushkey": f"key-1-{alice.user_id}"}
    (await set_pusher(client, alice, gone)).ok()
    (await set_pusher(client, alice, pusher(f"one-more-{alice.user_id}"))).ok()
    assert len(await pushers(client, alice)) == 20
    (await set_pusher(client, bob, pusher(f"key-{bob.user_id}"))).ok()


async def test_pusher_data_is_at_most_4_kib(client: MatrixClient) -> None:
    alice = await client.register()
    url = "https://push.example/_matrix/push/v1/notify"
    base = len(f'{{"url":"{url}","blob":""}}')
    fits = pusher(data={"url": url, "blob": "x" * (4096 - base)})
    (await set_pusher(client, alice, fits)).ok()
    too_big = pusher("other", data={"url": url, "blob": "x" * (4097 - base)})
    assert_error(await set_pusher(client, alice, too_big), 400, INVALID)
    assert [p["pushkey"] for p in await pushers(client, alice)] == ["a_push_key"]
