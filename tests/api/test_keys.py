"""End-to-end encryption keys over HTTP against a real Peyvand (every backend).

Client-Server API, "End-to-End Encryption": /keys/upload, /keys/query, /keys/claim,
/keys/device_signing/upload and /keys/signatures/upload, with real ed25519 keys and
signatures (signedjson), bad input and concurrent claims.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

from signedjson.key import (
    decode_signing_key_base64,
    encode_signing_key_base64,
    generate_signing_key,
)
from signedjson.types import SigningKey

from harness.client import Account, MatrixClient, Response
from peyvand.events.signing import sign_json, verify_key_base64
from peyvand.types import UserID

SIGNED = "signed_curve25519"


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


def device_keys(
    account: Account, key: SigningKey | None = None
) -> tuple[dict[str, Any], SigningKey]:
    """Signed identity keys of ``account``'s device and its ed25519 signing key."""
    key = key or generate_signing_key(account.device_id)
    body = {
        "user_id": account.user_id,
        "device_id": account.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            f"ed25519:{account.device_id}": verify_key_base64(key),
            f"curve25519:{account.device_id}": "3C5BFWi2Y8MaVvjM8M22DBmh24PmgR0nPvJOIArzgyI",
        },
    }
    return sign_json(body, account.user_id, key), key


def one_time_keys(
    account: Account, key: SigningKey, names: list[str], algorithm: str = SIGNED
) -> dict[str, Any]:
    return {
        f"{algorithm}:{name}": sign_json({"key": f"otk-{name}"}, account.user_id, key)
        for name in names
    }


def cross_signing_key(user_id: str, usage: str) -> SigningKey:
    """A fresh ed25519 key whose version is its public key (as cross-signing keys are)."""
    seed = generate_signing_key("x")
    public = verify_key_base64(seed)
    return decode_signing_key_base64("ed25519", public, encode_signing_key_base64(seed))


def cs_key_json(
    user_id: UserID, usage: str, key: SigningKey, signer: SigningKey | None
) -> dict[str, Any]:
    body = {"user_id": user_id, "usage": [usage], "keys": {f"ed25519:{key.version}": key.version}}
    return sign_json(body, user_id, signer) if signer is not None else body


async def upload(client: MatrixClient, account: Account, **body: Any) -> Response:
    return await client.request("POST", "keys/upload", json=body, token=account)


async def query(client: MatrixClient, account: Account, users: dict[str, list[str]]) -> Any:
    return (
        await client.request("POST", "keys/query", json={"device_keys": users}, token=account)
    ).ok()


async def claim(
    client: MatrixClient, account: Account, wanted: Mapping[UserID, Mapping[str, str]]
) -> Any:
    return (
        await client.request("POST", "keys/claim", json={"one_time_keys": wanted}, token=account)
    ).ok()


def password_auth(account: Account) -> dict[str, Any]:
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": account.user_id},
        "password": account.password,
    }


# /keys/upload and /keys/query -----------------------------------------------------------


async def test_upload_then_query_device_keys(client: MatrixClient) -> None:
    alice = await client.register()
    bob = await client.register()
    await client.request(
        "PUT", f"devices/{alice.device_id}", json={"display_name": "Phone"}, token=alice
    )
    keys, signing = device_keys(alice)
    result = (
        await upload(
            client, alice, device_keys=keys, one_time_keys=one_time_keys(alice, signing, ["a", "b"])
        )
    ).ok()
    assert result == {"one_time_key_counts": {SIGNED: 2}}
    answer = await query(client, bob, {alice.user_id: []})
    assert answer["failures"] == {}
    assert answer["device_keys"] == {
        alice.user_id: {alice.device_id: {**keys, "unsigned": {"device_display_name": "Phone"}}}
    }
    named = await query(
        client, bob, {alice.user_id: [alice.device_id, "NOPE"], "@nobody:localhost": []}
    )
    assert list(named["device_keys"][alice.user_id]) == [alice.device_id]
    assert named["device_keys"]["@nobody:localhost"] == {}
    # Uploading the same keys again changes nothing; uploading no keys reports counts.
    assert (await upload(client, alice, device_keys=keys)).ok() == result
    assert (await upload(client, alice)).ok() == result


async def test_identity_keys_of_a_device_cannot_change(client: MatrixClient) -> None:
    alice = await client.register()
    keys, _ = device_keys(alice)
    (await upload(client, alice, device_keys=keys)).ok()
    other, _ = device_keys(alice)
    assert_error(await upload(client, alice, device_keys=other), 400, "M_INVALID_PARAM")
    stored = (await query(client, alice, {alice.user_id: []}))["device_keys"][alice.user_id]
    assert stored[alice.device_id]["keys"] == keys["keys"]


async def test_upload_refuses_keys_of_other_users_and_devices(client: MatrixClient) -> None:
    alice = await client.register()
    bob = await client.register()
    bobs_keys, _ = device_keys(bob)
    assert_error(await upload(client, alice, device_keys=bobs_keys), 400, "M_INVALID_PARAM")
    other_device = Account(alice.user_id, alice.access_token, "OTHERDEVICE", alice.password)
    keys, _ = device_keys(other_device)
    assert_error(await upload(client, alice, device_keys=keys), 400, "M_INVALID_PARAM")
    assert (await query(client, alice, {alice.user_id: [], bob.user_id: []}))["device_keys"] == {
        alice.user_id: {},
        bob.user_id: {},
    }


async def test_bad_keys_are_refused_and_nothing_is_stored(client: MatrixClient) -> None:
    alice = await client.register()
    keys, signing = device_keys(alice)
    good_otks = one_time_keys(alice, signing, ["good"])
    unsigned_keys = {k: v for k, v in keys.items() if k != "signatures"}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"device_keys": unsigned_keys, "one_time_keys": good_otks}, 400, "M_BAD_JSON"),
        ({"device_keys": {**keys, "keys": "nope"}}, 400, "M_BAD_JSON"),
        ({"device_keys": {**keys, "algorithms": [1]}}, 400, "M_BAD_JSON"),
        ({"device_keys": "keys"}, 400, "M_BAD_JSON"),
        ({"device_keys": keys, "one_time_keys": {"nocolon": "k"}}, 400, "M_BAD_JSON"),
        ({"device_keys": keys, "one_time_keys": {f"{SIGNED}:x": 5}}, 400, "M_BAD_JSON"),
        ({"device_keys": keys, "one_time_keys": {f"{SIGNED}:x": {"nokey": 1}}}, 400, "M_BAD_JSON"),
        (
            {
                "device_keys": keys,
                "one_time_keys": one_time_keys(alice, generate_signing_key("z"), ["x"]),
            },
            400,
            "M_INVALID_SIGNATURE",
        ),
        ({"device_keys": keys, "one_time_keys": {f"{SIGNED}:big": "k" * 5000}}, 413, "M_TOO_LARGE"),
        (
            {"device_keys": keys, "one_time_keys": {f"curve25519:{i}": "k" for i in range(501)}},
            413,
            "M_TOO_LARGE",
        ),
        (
            {"device_keys": keys, "fallback_keys": {f"{SIGNED}:f1": "a", f"{SIGNED}:f2": "b"}},
            400,
            "M_INVALID_PARAM",
        ),
        ({"device_keys": {**keys, "huge": "x" * 20_000}}, 413, "M_TOO_LARGE"),
    ]
    for body, status, errcode in cases:
        assert_error(await upload(client, alice, **body), status, errcode)
    assert (await query(client, alice, {alice.user_id: []}))["device_keys"][alice.user_id] == {}
    assert (await upload(client, alice)).ok() == {"one_time_key_counts": {SIGNED: 0}}
    assert await claim(client, alice, {alice.user_id: {alice.device_id: SIGNED}}) == {
        "one_time_keys": {},
        "failures": {},
    }


async def test_one_time_key_reuse_and_limits(client: MatrixClient) -> None:
    alice = await client.register()
    keys, signing = device_keys(alice)
    first = one_time_keys(alice, signing, ["a", "b"])
    (await upload(client, alice, device_keys=keys, one_time_keys=first)).ok()
    # The same key again (even re-signed) is fine; another key under a used ID is not,
    # and then nothing of that upload is stored.
    again = {**first, **one_time_keys(alice, signing, ["c"])}
    assert (await upload(client, alice, one_time_keys=again)).ok() == {
        "one_time_key_counts": {SIGNED: 3}
    }
    clash = {
        **one_time_keys(alice, signing, ["d"]),
        f"{SIGNED}:a": sign_json({"key": "other"}, alice.user_id, signing),
    }
    assert_error(await upload(client, alice, one_time_keys=clash), 400, "M_INVALID_PARAM")
    many = {f"curve25519:{i}": f"k{i}" for i in range(400)}
    assert (await upload(client, alice, one_time_keys=many)).ok() == {
        "one_time_key_counts": {SIGNED: 3, "curve25519": 400}
    }
    more = {f"curve25519:x{i}": f"k{i}" for i in range(101)}
    assert_error(await upload(client, alice, one_time_keys=more), 413, "M_TOO_LARGE")
    assert (await upload(client, alice)).ok() == {
        "one_time_key_counts": {SIGNED: 3, "curve25519": 400}
    }


# /keys/claim ---------------------------------------------------------------------------


async def test_claim_one_time_keys_then_the_fallback_key(client: MatrixClient) -> None:
    alice = await client.register()
    bob = await client.register()
    keys, signing = device_keys(alice)
    otks = one_time_keys(alice, signing, ["k1", "k2"])
    fallback = {f"{SIGNED}:fb": sign_json({"key": "fb", "fallback": True}, alice.user_id, signing)}
    (await upload(client, alice, device_keys=keys, one_time_keys=otks, fallback_keys=fallback)).ok()
    wanted = {
        alice.user_id: {alice.device_id: SIGNED, "NODEVICE": SIGNED},
        UserID("@x:elsewhere.example"): {"D": SIGNED},
    }
    got = []
    for _ in range(4):
        answer = await claim(client, bob, wanted)
        assert answer["failures"] == {"elsewhere.example": answer["failures"]["elsewhere.example"]}
        assert list(answer["one_time_keys"]) == [alice.user_id]
        got.append(answer["one_time_keys"][alice.user_id][alice.device_id])
    assert got[0] == {f"{SIGNED}:k1": otks[f"{SIGNED}:k1"]} or got[0] == {
        f"{SIGNED}:k2": otks[f"{SIGNED}:k2"]
    }
    assert {next(iter(g)) for g in got[:2]} == {f"{SIGNED}:k1", f"{SIGNED}:k2"}
    assert got[2] == got[3] == fallback
    assert (await upload(client, alice)).ok() == {"one_time_key_counts": {SIGNED: 0}}
    assert await claim(client, bob, {alice.user_id: {alice.device_id: "curve25519"}}) == {
        "one_time_keys": {},
        "failures": {},
    }


async def test_concurrent_claims_never_hand_out_a_key_twice(client: MatrixClient) -> None:
    alice = await client.register()
    claimers = [await client.register() for _ in range(3)]
    keys, signing = device_keys(alice)
    names = [f"k{i:02}" for i in range(20)]
    fallback = {f"{SIGNED}:fb": sign_json({"key": "fb", "fallback": True}, alice.user_id, signing)}
    (
        await upload(
            client,
            alice,
            device_keys=keys,
            one_time_keys=one_time_keys(alice, signing, names),
            fallback_keys=fallback,
        )
    ).ok()
    wanted = {alice.user_id: {alice.device_id: SIGNED}}
    answers = await asyncio.gather(*(claim(client, claimers[i % 3], wanted) for i in range(30)))
    handed = [next(iter(a["one_time_keys"][alice.user_id][alice.device_id])) for a in answers]
    one_time = [h for h in handed if h != f"{SIGNED}:fb"]
    assert sorted(one_time) == [f"{SIGNED}:{n}" for n in names]
    assert handed.count(f"{SIGNED}:fb") == 10


async def test_deleted_devices_lose_their_keys(client: MatrixClient) -> None:
    alice = await client.register()
    second = await client.login(alice.user_id, alice.password)
    bob = await client.register()
    keys, signing = device_keys(second)
    (
        await upload(
            client, second, device_keys=keys, one_time_keys=one_time_keys(second, signing, ["a"])
        )
    ).ok()
    assert (
        second.device_id
        in (await query(client, bob, {alice.user_id: []}))["device_keys"][alice.user_id]
    )
    (await client.request("POST", "logout", json={}, token=second)).ok()
    assert (await query(client, bob, {alice.user_id: []}))["device_keys"][alice.user_id] == {}
    wanted = {alice.user_id: {second.device_id: SIGNED}}
    assert (await claim(client, bob, wanted))["one_time_keys"] == {}


async def test_query_and_claim_input_errors(client: MatrixClient) -> None:
    alice = await client.register()
    body: dict[str, Any]
    for body in (
        {},
        {"device_keys": []},
        {"device_keys": {alice.user_id: "D"}},
        {"device_keys": {alice.user_id: [1]}},
    ):
        response = await client.request("POST", "keys/query", json=body, token=alice)
        assert response.status == 400, (body, response.body)
    assert_error(
        await client.request(
            "POST", "keys/query", json={"device_keys": {"not-a-user": []}}, token=alice
        ),
        400,
        "M_INVALID_PARAM",
    )
    for body in (
        {},
        {"one_time_keys": {alice.user_id: ["D"]}},
        {"one_time_keys": {alice.user_id: {"D": 1}}},
    ):
        response = await client.request("POST", "keys/claim", json=body, token=alice)
        assert response.status == 400, (body, response.body)
    remote = await query(client, alice, {"@bob:elsewhere.example": []})
    assert list(remote["failures"]) == ["elsewhere.example"]
    assert (await client.request("POST", "keys/query", json={"device_keys": {}})).status == 401


# Cross-signing -------------------------------------------------------------------------


async def _cross_sign(
    client: MatrixClient, account: Account
) -> tuple[SigningKey, SigningKey, SigningKey, dict[str, Any]]:
    master = cross_signing_key(account.user_id, "master")
    self_signing = cross_signing_key(account.user_id, "self_signing")
    user_signing = cross_signing_key(account.user_id, "user_signing")
    body = {
        "master_key": cs_key_json(account.user_id, "master", master, None),
        "self_signing_key": cs_key_json(account.user_id, "self_signing", self_signing, master),
        "user_signing_key": cs_key_json(account.user_id, "user_signing", user_signing, master),
    }
    (await client.request("POST", "keys/device_signing/upload", json=body, token=account)).ok()
    return master, self_signing, user_signing, body


async def test_cross_signing_upload_uia_and_visibility(client: MatrixClient) -> None:
    alice = await client.register()
    bob = await client.register()
    master, _, _, body = await _cross_sign(client, alice)
    # The same keys again need no UIA; a new key does.
    path = "keys/device_signing/upload"
    (await client.request("POST", path, json=body, token=alice)).ok()
    new_ssk = cross_signing_key(alice.user_id, "self_signing")
    change = {"self_signing_key": cs_key_json(alice.user_id, "self_signing", new_ssk, master)}
    first = await client.request("POST", path, json=change, token=alice)
    assert first.status == 401 and first.body["flows"] == [{"stages": ["m.login.password"]}]
    auth = {**password_auth(alice), "session": first.body["session"]}
    (await client.request("POST", path, json={**change, "auth": auth}, token=alice)).ok()

    own = await query(client, alice, {alice.user_id: []})
    assert own["master_keys"] == {alice.user_id: body["master_key"]}
    assert own["self_signing_keys"] == {alice.user_id: change["self_signing_key"]}
    assert own["user_signing_keys"] == {alice.user_id: body["user_signing_key"]}
    seen_by_bob = await query(client, bob, {alice.user_id: []})
    assert seen_by_bob["master_keys"] == {alice.user_id: body["master_key"]}
    assert seen_by_bob["self_signing_keys"] == {alice.user_id: change["self_signing_key"]}
    assert seen_by_bob["user_signing_keys"] == {}


async def test_cross_signing_upload_errors(client: MatrixClient) -> None:
    alice = await client.register()
    path = "keys/device_signing/upload"
    master = cross_signing_key(alice.user_id, "master")
    ssk = cross_signing_key(alice.user_id, "self_signing")
    stranger = cross_signing_key(alice.user_id, "master")
    master_json = cs_key_json(alice.user_id, "master", master, None)
    cases: list[tuple[dict[str, Any], int, str]] = [
        (
            {"self_signing_key": cs_key_json(alice.user_id, "self_signing", ssk, master)},
            400,
            "M_MISSING_PARAM",
        ),
        (
            {
                "master_key": master_json,
                "self_signing_key": cs_key_json(alice.user_id, "self_signing", ssk, stranger),
            },
            400,
            "M_INVALID_SIGNATURE",
        ),
        (
            {"master_key": cs_key_json(UserID("@other:localhost"), "master", master, None)},
            400,
            "M_INVALID_PARAM",
        ),
        (
            {"master_key": cs_key_json(alice.user_id, "self_signing", master, None)},
            400,
            "M_INVALID_PARAM",
        ),
        ({"master_key": {**master_json, "keys": {}}}, 400, "M_INVALID_PARAM"),
        ({"master_key": {**master_json, "keys": {"ed25519:abc": "abc"}}}, 400, "M_INVALID_PARAM"),
        ({"master_key": "key"}, 400, "M_BAD_JSON"),
    ]
    for body, status, errcode in cases:
        assert_error(await client.request("POST", path, json=body, token=alice), status, errcode)
    assert (await query(client, alice, {alice.user_id: []}))["master_keys"] == {}
    # A key whose public key is one of the user's device IDs.
    login = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": alice.user_id},
        "password": alice.password,
        "device_id": master.version,
    }
    (await client.request("POST", "login", json=login)).ok()
    clash = await client.request("POST", path, json={"master_key": master_json}, token=alice)
    assert_error(clash, 403, "M_FORBIDDEN")
    assert (await query(client, alice, {alice.user_id: []}))["master_keys"] == {}


async def test_signatures_upload_and_visibility(client: MatrixClient) -> None:
    alice = await client.register()
    bob = await client.register()
    keys, device_key = device_keys(alice)
    (await upload(client, alice, device_keys=keys)).ok()
    a_master, a_ssk, _, a_body = await _cross_sign(client, alice)
    _, _, b_usk, _ = await _cross_sign(client, bob)

    signed_device = sign_json(keys, alice.user_id, a_ssk)
    signed_master = sign_json(a_body["master_key"], alice.user_id, device_key)
    forged = copy.deepcopy(signed_device)
    forged["signatures"][alice.user_id][f"ed25519:{a_ssk.version}"] = (
        "AAAA" + forged["signatures"][alice.user_id][f"ed25519:{a_ssk.version}"][4:]
    )
    result = (
        await client.request(
            "POST",
            "keys/signatures/upload",
            json={
                alice.user_id: {
                    alice.device_id: signed_device,
                    a_master.version: signed_master,
                    "GHOST": signed_device,
                }
            },
            token=alice,
        )
    ).ok()
    assert list(result["failures"]) == [alice.user_id]
    assert list(result["failures"][alice.user_id]) == ["GHOST"]

    bob_signs = sign_json(a_body["master_key"], bob.user_id, b_usk)
    (
        await client.request(
            "POST",
            "keys/signatures/upload",
            json={alice.user_id: {a_master.version: bob_signs}},
            token=bob,
        )
    ).ok()

    by_bob = await query(client, bob, {alice.user_id: []})
    device_sigs = by_bob["device_keys"][alice.user_id][alice.device_id]["signatures"][alice.user_id]
    assert device_sigs == signed_device["signatures"][alice.user_id]
    master_sigs = by_bob["master_keys"][alice.user_id]["signatures"]
    assert master_sigs == {bob.user_id: bob_signs["signatures"][bob.user_id]}
    by_alice = await query(client, alice, {alice.user_id: []})
    assert by_alice["master_keys"][alice.user_id]["signatures"] == signed_master["signatures"]

    # Signatures that do not verify or do not match the stored key are failures, stored
    # nowhere.
    other_device, _ = device_keys(alice)
    wrong_object = sign_json(other_device, alice.user_id, a_ssk)
    bad = (
        await client.request(
            "POST",
            "keys/signatures/upload",
            json={alice.user_id: {alice.device_id: forged}},
            token=alice,
        )
    ).ok()
    assert bad["failures"][alice.user_id][alice.device_id]["errcode"] == "M_INVALID_SIGNATURE"
    mismatch = (
        await client.request(
            "POST",
            "keys/signatures/upload",
            json={alice.user_id: {alice.device_id: wrong_object}},
            token=alice,
        )
    ).ok()
    assert mismatch["failures"][alice.user_id][alice.device_id]["errcode"] == "M_INVALID_PARAM"
    carol = await client.register()
    no_usk = (
        await client.request(
            "POST",
            "keys/signatures/upload",
            json={alice.user_id: {a_master.version: bob_signs}},
            token=carol,
        )
    ).ok()
    assert no_usk["failures"][alice.user_id][a_master.version]["errcode"] == "M_NOT_FOUND"
    by_carol = await query(client, carol, {alice.user_id: []})
    assert "signatures" not in by_carol["master_keys"][alice.user_id]
    malformed = await client.request(
        "POST", "keys/signatures/upload", json={alice.user_id: "x"}, token=alice
    )
    assert_error(malformed, 400, "M_INVALID_PARAM")


# Key changes reach the device lists ----------------------------------------------------


async def _changed_since(client: MatrixClient, account: Account, since: str) -> list[str]:
    params = {"since": since, "timeout": "0"}
    body = (await client.request("GET", "sync", token=account, params=params)).ok()
    users: list[str] = body["device_lists"]["changed"]
    return users


async def _next_batch(client: MatrixClient, account: Account) -> str:
    body = (await client.request("GET", "sync", token=account, params={"timeout": "0"})).ok()
    token: str = body["next_batch"]
    return token


async def test_new_keys_are_reported_to_users_sharing_a_room(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room = await client.request("POST", "createRoom", json={"preset": "public_chat"}, token=alice)
    (await client.request("POST", f"join/{room.ok()['room_id']}", json={}, token=bob)).ok()
    keys, _ = device_keys(alice)

    since = await _next_batch(client, bob)
    (await upload(client, alice, device_keys=keys)).ok()
    assert alice.user_id in await _changed_since(client, bob, since)
    # The same keys again are no change.
    since = await _next_batch(client, bob)
    (await upload(client, alice, device_keys=keys)).ok()
    assert alice.user_id not in await _changed_since(client, bob, since)
    # New cross-signing keys are.
    await _cross_sign(client, alice)
    assert alice.user_id in await _changed_since(client, bob, since)


async def test_unstable_cross_signing_paths(client: MatrixClient) -> None:
    """The MSC1756 paths under /_matrix/client/unstable, which Synapse still serves."""
    alice = await client.register()
    master = cross_signing_key(alice.user_id, "master")
    body = {"master_key": cs_key_json(alice.user_id, "master", master, None)}
    path = "/_matrix/client/unstable/keys/device_signing/upload"
    (await client.request("POST", path, json=body, token=alice)).ok()
    own = await query(client, alice, {alice.user_id: []})
    assert own["master_keys"] == {alice.user_id: body["master_key"]}
    signatures = await client.request(
        "POST", "/_matrix/client/unstable/keys/signatures/upload", json={}, token=alice
    )
    assert signatures.ok() == {"failures": {}}


async def test_keys_the_server_cannot_check_are_taken(client: MatrixClient) -> None:
    """As Synapse: device keys are stored unverified (an identity key that is no ed25519
    key, a wrong self-signature, none, key names of another device); clients verify
    signatures before trusting keys. One-time keys then go unchecked too."""
    alice, bob = await client.register(), await client.register()
    garbage = {
        "user_id": alice.user_id,
        "device_id": alice.device_id,
        "algorithms": ["m.olm.curve25519-aes-sha256", "m.megolm.v1.aes-sha"],
        "keys": {
            f"curve25519:{alice.device_id}": "curve25519+key",
            f"ed25519:{alice.device_id}": "ed25519+key",
        },
        "signatures": {alice.user_id: {f"ed25519:{alice.device_id}": "self+signature"}},
    }
    otks = {"my_algorithm:my_id_1": "KIhHVkAQi8r41aPNql2zTqQsInpFa8XdslQLC8F8BHc"}
    counts = await upload(client, alice, device_keys=garbage, one_time_keys=otks)
    assert counts.ok() == {"one_time_key_counts": {SIGNED: 0, "my_algorithm": 1}}
    found = (await query(client, alice, {alice.user_id: []}))["device_keys"][alice.user_id]
    assert found[alice.device_id]["keys"] == garbage["keys"]

    keys, _ = device_keys(bob)
    forged = copy.deepcopy(keys)
    forged["algorithms"].append("m.extra")
    (await upload(client, bob, device_keys=forged)).ok()
    carol = await client.register()
    other_names = {
        "user_id": carol.user_id,
        "device_id": carol.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
        "keys": {"ed25519:test": "c3op6BJi8aUnDGA541Q6TbTPmbiy1GqGv-zzXDQM9Us"},
        "signatures": {},
    }
    (await upload(client, carol, device_keys=other_names)).ok()
    # The shape is still checked.
    bad = {**other_names, "keys": {"ed25519:test": 5}}
    assert_error(await upload(client, carol, device_keys=bad), 400, "M_BAD_JSON")


async def test_a_new_user_signing_key_is_told_to_its_owner_only(client: MatrixClient) -> None:
    """Others never see a user-signing key, so they are not told of a new one (Synapse);
    the owner's devices are."""
    alice, bob = await client.register(), await client.register()
    room_id = (
        await client.request("POST", "createRoom", json={"preset": "public_chat"}, token=alice)
    ).ok()["room_id"]
    (await client.request("POST", f"join/{room_id}", json={}, token=bob)).ok()
    master, _, _, _ = await _cross_sign(client, alice)

    async def since(account: Account) -> str:
        token: str = (await client.request("GET", "sync", token=account)).ok()["next_batch"]
        return token

    alice_from, bob_from = await since(alice), await since(bob)
    new_usk = cross_signing_key(alice.user_id, "user_signing")
    change = {"user_signing_key": cs_key_json(alice.user_id, "user_signing", new_usk, master)}
    path = "keys/device_signing/upload"
    first = await client.request("POST", path, json=change, token=alice)
    auth = {**password_auth(alice), "session": first.body["session"]}
    (await client.request("POST", path, json={**change, "auth": auth}, token=alice)).ok()

    async def changed(account: Account, token: str) -> list[str]:
        params = {"since": token, "timeout": "0"}
        body = (await client.request("GET", "sync", token=account, params=params)).ok()
        users: list[str] = body["device_lists"]["changed"]
        return users

    assert alice.user_id in await changed(alice, alice_from)
    assert alice.user_id not in await changed(bob, bob_from)
    # A new self-signing key is everyone's business.
    bob_from = await since(bob)
    new_ssk = cross_signing_key(alice.user_id, "self_signing")
    change = {"self_signing_key": cs_key_json(alice.user_id, "self_signing", new_ssk, master)}
    first = await client.request("POST", path, json=change, token=alice)
    auth = {**password_auth(alice), "session": first.body["session"]}
    (await client.request("POST", path, json={**change, "auth": auth}, token=alice)).ok()
    assert alice.user_id in await changed(bob, bob_from)


async def test_signing_another_users_key_is_told_to_the_signer_only(
    client: MatrixClient,
) -> None:
    """As Synapse: the signer's devices see the signed user in device_lists.changed; the
    others in the room are not told."""
    alice, bob, carol = await client.register(), await client.register(), await client.register()
    room_id = (
        await client.request("POST", "createRoom", json={"preset": "public_chat"}, token=alice)
    ).ok()["room_id"]
    for member in (bob, carol):
        (await client.request("POST", f"join/{room_id}", json={}, token=member)).ok()
    a_master, _, _, a_body = await _cross_sign(client, alice)
    _, _, b_usk, _ = await _cross_sign(client, bob)

    async def since(account: Account) -> str:
        token: str = (await client.request("GET", "sync", token=account)).ok()["next_batch"]
        return token

    async def changed(account: Account, token: str) -> list[str]:
        params = {"since": token, "timeout": "0"}
        body = (await client.request("GET", "sync", token=account, params=params)).ok()
        users: list[str] = body["device_lists"]["changed"]
        return users

    bob_from, carol_from = await since(bob), await since(carol)
    bob_signs = sign_json(a_body["master_key"], bob.user_id, b_usk)
    body = {alice.user_id: {a_master.version: bob_signs}}
    result = await client.request("POST", "keys/signatures/upload", json=body, token=bob)
    assert result.ok() == {"failures": {}}
    assert alice.user_id in await changed(bob, bob_from)
    assert alice.user_id not in await changed(carol, carol_from)
