"""Server-side key backups over HTTP against a real Peyvand (Client-Server API,
"Server-side key backups", key_backup.yaml): versions, etags and counts, the rules for
replacing a stored key, the three key granularities, errors and isolation between users.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from harness.client import CLIENT_V3, Account, MatrixClient, Response, new_session
from harness.server import HomeserverProcess

ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
AUTH_DATA = {"public_key": "abcdefg", "signatures": {"@alice:example.org": {"ed25519:D": "s"}}}
ROOM = "!room:example.org"
OTHER_ROOM = "!other:example.org"


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


def key(
    *, verified: bool = False, index: int = 0, forwarded: int = 0, data: str = "x"
) -> dict[str, Any]:
    """A ``KeyBackupData``; ``data`` tells stored keys apart."""
    return {
        "first_message_index": index,
        "forwarded_count": forwarded,
        "is_verified": verified,
        "session_data": {"ephemeral": "e", "ciphertext": data, "mac": "m"},
    }


def keys_path(room_id: str | None = None, session_id: str | None = None) -> str:
    path = "room_keys/keys"
    if room_id is not None:
        path += "/" + quote(room_id, safe="")
    if session_id is not None:
        path += "/" + quote(session_id, safe="")
    return path


async def create_version(client: MatrixClient, account: Account, **extra: Any) -> str:
    body = {"algorithm": ALGORITHM, "auth_data": AUTH_DATA, **extra}
    version: str = (
        await client.request("POST", "room_keys/version", json=body, token=account)
    ).ok()["version"]
    return version


async def put(
    client: MatrixClient,
    account: Account,
    version: str,
    body: dict[str, Any],
    room_id: str | None = None,
    session_id: str | None = None,
) -> Response:
    return await client.request(
        "PUT",
        keys_path(room_id, session_id),
        json=body,
        token=account,
        params={"version": version},
    )


async def get(
    client: MatrixClient,
    account: Account,
    version: str,
    room_id: str | None = None,
    session_id: str | None = None,
) -> Response:
    return await client.request(
        "GET", keys_path(room_id, session_id), token=account, params={"version": version}
    )


async def delete(
    client: MatrixClient,
    account: Account,
    version: str,
    room_id: str | None = None,
    session_id: str | None = None,
) -> Response:
    return await client.request(
        "DELETE", keys_path(room_id, session_id), token=account, params={"version": version}
    )


async def version_info(client: MatrixClient, account: Account, version: str = "") -> Any:
    path = f"room_keys/version/{version}" if version else "room_keys/version"
    return (await client.request("GET", path, token=account)).ok()


def rooms(*entries: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    """``{"rooms": ...}`` from (room, session, key data) triples."""
    body: dict[str, Any] = {}
    for room_id, session_id, data in entries:
        body.setdefault(room_id, {"sessions": {}})["sessions"][session_id] = data
    return {"rooms": body}


# Versions -------------------------------------------------------------------------------


async def test_version_lifecycle(client: MatrixClient) -> None:
    alice = await client.register()
    assert_error(await client.request("GET", "room_keys/version", token=alice), 404, "M_NOT_FOUND")

    first = await create_version(client, alice)
    info = await version_info(client, alice)
    assert info == {
        "algorithm": ALGORITHM,
        "auth_data": AUTH_DATA,
        "count": 0,
        "etag": info["etag"],
        "version": first,
    }
    assert isinstance(info["etag"], str)
    assert await version_info(client, alice, first) == info

    second = await create_version(client, alice)
    assert int(second) > int(first)
    assert (await version_info(client, alice))["version"] == second
    # The older version stays readable until deleted.
    assert (await version_info(client, alice, first))["version"] == first

    # Update: only auth_data changes; the body's version may repeat the path's.
    new_auth = {"public_key": "hijklmn"}
    body = {"algorithm": ALGORITHM, "auth_data": new_auth, "version": second}
    path = f"room_keys/version/{second}"
    assert (await client.request("PUT", path, json=body, token=alice)).ok() == {}
    assert (await version_info(client, alice, second))["auth_data"] == new_auth
    del body["version"]
    body["auth_data"] = AUTH_DATA
    (await client.request("PUT", path, json=body, token=alice)).ok()
    assert (await version_info(client, alice, second))["auth_data"] == AUTH_DATA

    # Delete the current version: the previous one is current again.
    assert (await client.request("DELETE", path, token=alice)).ok() == {}
    assert_error(await client.request("GET", path, token=alice), 404, "M_NOT_FOUND")
    assert (await version_info(client, alice))["version"] == first
    # Deleting a deleted version succeeds (key_backup.yaml); versions are never reused.
    assert (await client.request("DELETE", path, token=alice)).ok() == {}
    third = await create_version(client, alice)
    assert int(third) > int(second)

    (await client.request("DELETE", f"room_keys/version/{first}", token=alice)).ok()
    (await client.request("DELETE", f"room_keys/version/{third}", token=alice)).ok()
    assert_error(await client.request("GET", "room_keys/version", token=alice), 404, "M_NOT_FOUND")


async def test_unknown_versions_are_not_found(client: MatrixClient) -> None:
    alice = await client.register()
    version = await create_version(client, alice)
    for unknown in ("999", "0", "-1", "abc", "01", "1" * 40, f"{version} "):
        path = f"room_keys/version/{quote(unknown)}"
        assert_error(await client.request("GET", path, token=alice), 404, "M_NOT_FOUND")
        assert_error(await client.request("DELETE", path, token=alice), 404, "M_NOT_FOUND")
        body = {"algorithm": ALGORITHM, "auth_data": AUTH_DATA}
        assert_error(await client.request("PUT", path, json=body, token=alice), 404, "M_NOT_FOUND")
        assert_error(await get(client, alice, unknown), 404, "M_NOT_FOUND")
        assert_error(await put(client, alice, unknown, rooms()), 404, "M_NOT_FOUND")
        assert_error(await delete(client, alice, unknown), 404, "M_NOT_FOUND")
    assert (await version_info(client, alice))["version"] == version


async def test_update_version_must_match(client: MatrixClient) -> None:
    alice = await client.register()
    version = await create_version(client, alice)
    path = f"room_keys/version/{version}"
    other_algorithm = {"algorithm": "org.example.other", "auth_data": {}}
    assert_error(
        await client.request("PUT", path, json=other_algorithm, token=alice),
        400,
        "M_INVALID_PARAM",
    )
    other_version = {"algorithm": ALGORITHM, "auth_data": {}, "version": "12345"}
    assert_error(
        await client.request("PUT", path, json=other_version, token=alice), 400, "M_INVALID_PARAM"
    )
    assert (await version_info(client, alice, version))["auth_data"] == AUTH_DATA


async def test_version_bodies_are_validated(client: MatrixClient) -> None:
    alice = await client.register()
    post = "room_keys/version"
    for body, errcode in [
        ({"auth_data": AUTH_DATA}, "M_MISSING_PARAM"),
        ({"algorithm": ALGORITHM}, "M_MISSING_PARAM"),
        ({"algorithm": 1, "auth_data": AUTH_DATA}, "M_BAD_JSON"),
        ({"algorithm": ALGORITHM, "auth_data": "not an object"}, "M_BAD_JSON"),
    ]:
        assert_error(await client.request("POST", post, json=body, token=alice), 400, errcode)
    assert_error(await client.request("POST", post, json=[1], token=alice), 400, "M_NOT_JSON")
    assert_error(await client.request("GET", post, token=alice), 404, "M_NOT_FOUND")

    version = await create_version(client, alice)
    path = f"{post}/{version}"
    for body, errcode in [
        ({"auth_data": AUTH_DATA}, "M_MISSING_PARAM"),
        ({"algorithm": ALGORITHM}, "M_MISSING_PARAM"),
        ({"algorithm": ALGORITHM, "auth_data": []}, "M_BAD_JSON"),
        ({"algorithm": ALGORITHM, "auth_data": {}, "version": 1}, "M_BAD_JSON"),
    ]:
        assert_error(await client.request("PUT", path, json=body, token=alice), 400, errcode)
    assert_error(await client.request("GET", post, token=None), 401, "M_MISSING_TOKEN")


# Keys: etag, count, replacement ---------------------------------------------------------


async def test_etag_and_count_follow_the_keys(client: MatrixClient) -> None:
    alice = await client.register()
    version = await create_version(client, alice)
    etag0 = (await version_info(client, alice))["etag"]

    result = (
        await put(client, alice, version, rooms((ROOM, "s1", key()), (ROOM, "s2", key())))
    ).ok()
    assert result["count"] == 2
    assert result["etag"] != etag0
    info = await version_info(client, alice)
    assert (info["count"], info["etag"]) == (2, result["etag"])

    # Nothing changes: neither does the etag (the same key, a worse key, an empty upload).
    unchanged: list[dict[str, Any]] = [
        rooms((ROOM, "s1", key())),
        rooms((ROOM, "s1", key(index=5, data="worse"))),
        rooms(),
        {"rooms": {ROOM: {"sessions": {}}}},
    ]
    for body in unchanged:
        assert (await put(client, alice, version, body)).ok() == result
    # Reading or updating auth_data does not move it either.
    update = {"algorithm": ALGORITHM, "auth_data": {"public_key": "other"}}
    (await client.request("PUT", f"room_keys/version/{version}", json=update, token=alice)).ok()
    (await get(client, alice, version)).ok()
    assert (await version_info(client, alice))["etag"] == result["etag"]

    # A better key replaces the stored one: a new etag, the same count.
    replaced = (await put(client, alice, version, rooms((ROOM, "s1", key(verified=True))))).ok()
    assert replaced["count"] == 2
    assert replaced["etag"] not in (etag0, result["etag"])

    # A new session and a replacement in one upload.
    body = rooms((OTHER_ROOM, "s3", key()), (ROOM, "s2", key(verified=True)))
    both = (await put(client, alice, version, body)).ok()
    assert both["count"] == 3
    assert both["etag"] != replaced["etag"]

    # Deleting a missing key changes nothing; deleting a key moves the etag.
    assert (await delete(client, alice, version, ROOM, "missing")).ok() == both
    assert (await delete(client, alice, version, "!nothing:example.org")).ok() == both
    gone = (await delete(client, alice, version, ROOM, "s1")).ok()
    assert gone["count"] == 2
    assert gone["etag"] != both["etag"]
    info = await version_info(client, alice)
    assert (info["count"], info["etag"]) == (2, gone["etag"])


@pytest.mark.parametrize(
    ("stored", "uploaded", "replaced"),
    [
        # A verified key always wins over an unverified one.
        (key(index=0), key(verified=True, index=10, forwarded=10), True),
        (key(verified=True, index=10, forwarded=10), key(index=0), False),
        # Then the lower first_message_index.
        (key(index=5, forwarded=0), key(index=4, forwarded=9), True),
        (key(index=4, forwarded=9), key(index=5, forwarded=0), False),
        (key(verified=True, index=5), key(verified=True, index=4, forwarded=3), True),
        # Then the lower forwarded_count.
        (key(index=4, forwarded=2), key(index=4, forwarded=1), True),
        (key(index=4, forwarded=1), key(index=4, forwarded=2), False),
        # A tie keeps the stored key.
        (key(verified=True, index=4, forwarded=1), key(verified=True, index=4, forwarded=1), False),
    ],
)
async def test_only_a_better_key_replaces_the_stored_one(
    client: MatrixClient, stored: dict[str, Any], uploaded: dict[str, Any], replaced: bool
) -> None:
    alice = await client.register()
    version = await create_version(client, alice)
    stored = {**stored, "session_data": {"ciphertext": "stored"}}
    uploaded = {**uploaded, "session_data": {"ciphertext": "uploaded"}}
    first = (await put(client, alice, version, stored, ROOM, "s")).ok()
    second = (await put(client, alice, version, uploaded, ROOM, "s")).ok()
    assert second["count"] == 1
    assert (second["etag"] != first["etag"]) is replaced
    expected = uploaded if replaced else stored
    assert (await get(client, alice, version, ROOM, "s")).ok() == expected


# Keys: granularities ----------------------------------------------------------------------


async def test_put_get_delete_at_every_granularity(client: MatrixClient) -> None:
    alice = await client.register()
    version = await create_version(client, alice)
    # A session ID as clients have them (base64: '/' and '+'), a room ID needing escapes.
    session = "AbC/dEf+GhI"
    a, b, c, d = key(data="a"), key(data="b"), key(data="c"), key(data="d")

    assert (await get(client, alice, version)).ok() == {"rooms": {}}
    assert (await put(client, alice, version, a, ROOM, session)).ok()["count"] == 1
    assert (await put(client, alice, version, {"sessions": {"s2": b}}, ROOM)).ok()["count"] == 2
    body = rooms((OTHER_ROOM, "s3", c), (OTHER_ROOM, "s4", d))
    assert (await put(client, alice, version, body)).ok()["count"] == 4

    everything = {
        "rooms": {
            ROOM: {"sessions": {session: a, "s2": b}},
            OTHER_ROOM: {"sessions": {"s3": c, "s4": d}},
        }
    }
    assert (await get(client, alice, version)).ok() == everything
    assert (await get(client, alice, version, ROOM)).ok() == everything["rooms"][ROOM]
    assert (await get(client, alice, version, ROOM, session)).ok() == a
    assert (await get(client, alice, version, OTHER_ROOM, "s4")).ok() == d
    # A room without keys is an empty sessions object; a session without a key is a 404.
    empty = "!empty:example.org"
    assert (await get(client, alice, version, empty)).ok() == {"sessions": {}}
    assert_error(await get(client, alice, version, ROOM, "s3"), 404, "M_NOT_FOUND")
    assert_error(await get(client, alice, version, empty, "s1"), 404, "M_NOT_FOUND")

    assert (await delete(client, alice, version, ROOM, session)).ok()["count"] == 3
    assert_error(await get(client, alice, version, ROOM, session), 404, "M_NOT_FOUND")
    assert (await get(client, alice, version, ROOM)).ok() == {"sessions": {"s2": b}}
    assert (await delete(client, alice, version, OTHER_ROOM)).ok()["count"] == 1
    assert (await get(client, alice, version, OTHER_ROOM)).ok() == {"sessions": {}}
    assert (await get(client, alice, version)).ok() == {"rooms": {ROOM: {"sessions": {"s2": b}}}}
    assert (await delete(client, alice, version)).ok()["count"] == 0
    assert (await get(client, alice, version)).ok() == {"rooms": {}}
    assert (await version_info(client, alice))["count"] == 0


async def test_a_large_upload(client: MatrixClient) -> None:
    """More sessions than one existence lookup covers; a re-upload changes nothing."""
    alice = await client.register()
    version = await create_version(client, alice)
    body = rooms(*((f"!r{i % 7}:example.org", f"s{i}", key(index=i)) for i in range(1200)))
    first = (await put(client, alice, version, body)).ok()
    assert first["count"] == 1200
    assert (await put(client, alice, version, body)).ok() == first
    better = rooms(*((f"!r{i % 7}:example.org", f"s{i}", key(index=0)) for i in range(0, 1200, 2)))
    second = (await put(client, alice, version, better)).ok()
    assert second["count"] == 1200
    assert second["etag"] != first["etag"]
    stored = (await get(client, alice, version)).ok()["rooms"]
    assert sum(len(room["sessions"]) for room in stored.values()) == 1200
    assert stored["!r1:example.org"]["sessions"]["s1"]["first_message_index"] == 1
    assert stored["!r2:example.org"]["sessions"]["s2"]["first_message_index"] == 0


async def test_concurrent_uploads_count_every_key_once(client: MatrixClient) -> None:
    """Uploads of one user are serialised: overlapping sessions are counted once."""
    alice = await client.register()
    version = await create_version(client, alice)
    uploads = [
        rooms(*((ROOM, f"s{i}", key(index=n)) for i in range(n * 10, n * 10 + 20)))
        for n in range(10)
    ]
    results = await asyncio.gather(*(put(client, alice, version, body) for body in uploads))
    assert all(result.status == 200 for result in results), results
    info = await version_info(client, alice)
    assert info["count"] == 110
    assert info["count"] == len((await get(client, alice, version, ROOM)).ok()["sessions"])
    assert len({result.body["etag"] for result in results}) == len(results)


# Keys: versions ---------------------------------------------------------------------------


async def test_keys_need_the_current_version(client: MatrixClient) -> None:
    alice = await client.register()
    # No backup at all: uploads are a 404.
    assert_error(await put(client, alice, "1", key(), ROOM, "s"), 404, "M_NOT_FOUND")

    old = await create_version(client, alice)
    (await put(client, alice, old, key(data="old"), ROOM, "s")).ok()
    current = await create_version(client, alice)

    # Writing to an older version: 403 with the current version, at every granularity.
    for response in (
        await put(client, alice, old, key(), ROOM, "t"),
        await put(client, alice, old, {"sessions": {"t": key()}}, ROOM),
        await put(client, alice, old, rooms((ROOM, "t", key()))),
    ):
        assert_error(response, 403, "M_WRONG_ROOM_KEYS_VERSION")
        assert response.body["current_version"] == current
    # The old version is still readable and its keys can be deleted.
    assert (await get(client, alice, old, ROOM, "s")).ok() == key(data="old")
    assert (await get(client, alice, current)).ok() == {"rooms": {}}
    assert (await delete(client, alice, old, ROOM, "s")).ok()["count"] == 0

    # Keys are per version; deleting a version deletes its keys.
    (await put(client, alice, current, key(), ROOM, "s")).ok()
    (await client.request("DELETE", f"room_keys/version/{current}", token=alice)).ok()
    for response in (
        await get(client, alice, current),
        await get(client, alice, current, ROOM),
        await get(client, alice, current, ROOM, "s"),
        await delete(client, alice, current),
    ):
        assert_error(response, 404, "M_NOT_FOUND")
    # The older version is current again and takes keys.
    assert (await put(client, alice, old, key(), ROOM, "s")).ok()["count"] == 1


async def test_version_parameter_is_required(client: MatrixClient) -> None:
    alice = await client.register()
    await create_version(client, alice)
    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        ("PUT", keys_path(), rooms()),
        ("GET", keys_path(), None),
        ("DELETE", keys_path(), None),
        ("PUT", keys_path(ROOM), {"sessions": {}}),
        ("GET", keys_path(ROOM), None),
        ("DELETE", keys_path(ROOM), None),
        ("PUT", keys_path(ROOM, "s"), key()),
        ("GET", keys_path(ROOM, "s"), None),
        ("DELETE", keys_path(ROOM, "s"), None),
    ]
    for method, path, body in requests:
        response = await client.request(method, path, json=body, token=alice)
        assert_error(response, 400, "M_MISSING_PARAM")


# Bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "errcode"),
    [
        ({"is_verified": "yes"}, "M_BAD_JSON"),
        ({"is_verified": 1}, "M_BAD_JSON"),
        ({"first_message_index": "1"}, "M_BAD_JSON"),
        ({"first_message_index": 1.5}, "M_BAD_JSON"),
        ({"first_message_index": True}, "M_BAD_JSON"),
        ({"forwarded_count": None}, "M_BAD_JSON"),
        ({"session_data": "base64"}, "M_BAD_JSON"),
        ({"first_message_index": -1}, "M_INVALID_PARAM"),
        # Past the canonical JSON range, as for events.
        ({"forwarded_count": 2**53}, "M_BAD_JSON"),
        ({"first_message_index": 2**70}, "M_BAD_JSON"),
    ],
)
async def test_bad_key_data(client: MatrixClient, change: dict[str, Any], errcode: str) -> None:
    alice = await client.register()
    version = await create_version(client, alice)
    bad = {**key(), **change}
    good = key()
    for response in (
        await put(client, alice, version, bad, ROOM, "s"),
        await put(client, alice, version, {"sessions": {"ok": good, "s": bad}}, ROOM),
        await put(client, alice, version, rooms((ROOM, "ok", good), (OTHER_ROOM, "s", bad))),
    ):
        assert_error(response, 400, errcode)
    # Nothing of a refused upload is stored.
    info = await version_info(client, alice)
    assert info["count"] == 0
    assert (await get(client, alice, version)).ok() == {"rooms": {}}


async def test_bad_upload_shapes(client: MatrixClient) -> None:
    alice = await client.register()
    version = await create_version(client, alice)
    missing = {k: v for k, v in key().items() if k != "session_data"}
    cases: list[tuple[str | None, str | None, Any, int, str]] = [
        (None, None, {}, 400, "M_MISSING_PARAM"),
        (None, None, {"rooms": []}, 400, "M_BAD_JSON"),
        (None, None, {"rooms": {ROOM: []}}, 400, "M_BAD_JSON"),
        (None, None, {"rooms": {ROOM: {}}}, 400, "M_MISSING_PARAM"),
        (None, None, {"rooms": {ROOM: {"sessions": [key()]}}}, 400, "M_BAD_JSON"),
        (None, None, {"rooms": {ROOM: {"sessions": {"s": "key"}}}}, 400, "M_BAD_JSON"),
        (None, None, rooms(("not-a-room", "s", key())), 400, "M_INVALID_PARAM"),
        (None, None, rooms(("!" + "r" * 255, "s", key())), 400, "M_INVALID_PARAM"),
        (None, None, rooms((ROOM, "s" * 256, key())), 400, "M_INVALID_PARAM"),
        (ROOM, None, {}, 400, "M_MISSING_PARAM"),
        (ROOM, None, {"sessions": "s"}, 400, "M_BAD_JSON"),
        ("not-a-room", None, {"sessions": {"s": key()}}, 400, "M_INVALID_PARAM"),
        (ROOM, "s", missing, 400, "M_MISSING_PARAM"),
        (ROOM, "s", [key()], 400, "M_NOT_JSON"),
        (ROOM, "s" * 256, key(), 400, "M_INVALID_PARAM"),
    ]
    for room_id, session_id, body, status, errcode in cases:
        response = await put(client, alice, version, body, room_id, session_id)
        assert_error(response, status, errcode)
    assert (await version_info(client, alice))["count"] == 0


async def test_oversized_upload_is_too_large(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    alice = await client.register()
    version = await create_version(client, alice)
    # Above the default max_request_size of 50 MiB.
    huge = orjson.dumps(key(data="x" * (50 * 1024 * 1024 + 1)))
    url = f"{homeserver.base_url}{CLIENT_V3}/{keys_path(ROOM, 's')}?version={version}"
    headers = {"Authorization": f"Bearer {alice.access_token}"}
    async with (
        new_session() as session,
        session.put(url, data=io.BytesIO(huge), headers=headers) as response,
    ):
        assert response.status == 413
        assert (await response.json())["errcode"] == "M_TOO_LARGE"
    assert (await version_info(client, alice))["count"] == 0


# Isolation and unsupported endpoints ------------------------------------------------------


async def test_backups_are_per_user(client: MatrixClient) -> None:
    alice = await client.register()
    bob = await client.register()
    version = await create_version(client, alice)
    (await put(client, alice, version, key(), ROOM, "s")).ok()

    assert_error(await client.request("GET", "room_keys/version", token=bob), 404, "M_NOT_FOUND")
    path = f"room_keys/version/{version}"
    assert_error(await client.request("GET", path, token=bob), 404, "M_NOT_FOUND")
    body = {"algorithm": ALGORITHM, "auth_data": {}}
    assert_error(await client.request("PUT", path, json=body, token=bob), 404, "M_NOT_FOUND")
    assert_error(await client.request("DELETE", path, token=bob), 404, "M_NOT_FOUND")
    for response in (
        await get(client, bob, version),
        await get(client, bob, version, ROOM),
        await get(client, bob, version, ROOM, "s"),
        await put(client, bob, version, key(), ROOM, "s"),
        await delete(client, bob, version),
        await delete(client, bob, version, ROOM, "s"),
    ):
        assert_error(response, 404, "M_NOT_FOUND")

    # Bob's own first version is numbered independently and sees none of Alice's keys.
    bobs = await create_version(client, bob)
    assert (await get(client, bob, bobs)).ok() == {"rooms": {}}
    info = await version_info(client, alice, version)
    assert (info["count"], info["auth_data"]) == (1, AUTH_DATA)
    assert (await get(client, alice, version, ROOM, "s")).ok() == key()


async def test_dehydrated_devices_are_unrecognized(client: MatrixClient) -> None:
    """MSC3814 is not implemented. matrix-js-sdk probes ``GET .../dehydrated_device`` and
    takes M_UNRECOGNIZED as "unsupported" (M_NOT_FOUND would mean "supported, none yet"),
    and ignores M_UNRECOGNIZED on the ``DELETE`` it sends when resetting encryption."""
    alice = await client.register()
    prefix = "/_matrix/client/unstable/org.matrix.msc3814.v1"
    for method, path in [
        ("GET", f"{prefix}/dehydrated_device"),
        ("DELETE", f"{prefix}/dehydrated_device"),
        ("PUT", f"{prefix}/dehydrated_device"),
        ("POST", f"{prefix}/dehydrated_device/DEVICE/events"),
    ]:
        response = await client.request(method, path, json={}, token=alice)
        assert_error(response, 404, "M_UNRECOGNIZED")
