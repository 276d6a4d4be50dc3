"""``events.device_keys``: the checks of uploaded device, one-time, fallback and
cross-signing keys and of the signatures of them, as pure functions.

Client-Server API, "End-to-End Encryption": "Uploading keys" and "Cross-signing". The
same rules are exercised over HTTP in ``tests/api/test_keys.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness.edu_world import cross_signing_key, signed_device_keys
from harness.edu_world import signing_key as cross_signing_signing_key
from peyvand.errors import Errcode, MatrixError
from peyvand.events.device_keys import (
    MASTER,
    MAX_DEVICE_KEYS_BYTES,
    MAX_IDENTIFIER_LENGTH,
    SELF_SIGNING,
    USER_SIGNING,
    CrossSigningKey,
    check_cross_signing_key,
    check_device_keys,
    check_key_map,
    check_key_signature,
    check_signed_by_master,
    device_identity_key,
    other_signature,
    own_signatures,
    same_one_time_key,
    unsigned_part,
)
from peyvand.events.signing import (
    SigningKey,
    generate_signing_key,
    get_verify_key,
    sign_json,
)
from peyvand.types import DeviceID, JsonDict, UserID

ALICE = UserID("@alice:test")
BOB = UserID("@bob:test")
DEVICE = DeviceID("DEVICE")


def _errcode(error: pytest.ExceptionInfo[MatrixError]) -> Errcode:
    return error.value.errcode


def _device_keys(key: SigningKey) -> JsonDict:
    return signed_device_keys(key, ALICE, DEVICE)


def _cross_signing_key(
    user_id: UserID, key_type: str, key: SigningKey, signer: SigningKey | None = None
) -> CrossSigningKey:
    body = cross_signing_key(user_id, key_type, key)
    if signer is not None:
        body = sign_json(body, user_id, signer)
    return CrossSigningKey(key_type, key.version, get_verify_key(key), body)


# Uploading keys ------------------------------------------------------------------------


def test_device_keys_are_taken_without_unsigned() -> None:
    key = generate_signing_key(DEVICE)
    uploaded = {**_device_keys(key), "unsigned": {"device_display_name": "phone"}}
    checked = check_device_keys(uploaded, ALICE, DEVICE)
    assert "unsigned" not in checked
    assert checked == _device_keys(key)
    assert unsigned_part(checked) == {
        k: v for k, v in uploaded.items() if k not in ("signatures", "unsigned")
    }


@pytest.mark.parametrize(
    ("change", "errcode"),
    [
        ({"user_id": BOB}, Errcode.INVALID_PARAM),
        ({"device_id": "OTHER"}, Errcode.INVALID_PARAM),
        ({"algorithms": "m.megolm.v1.aes-sha2"}, Errcode.BAD_JSON),
        ({"algorithms": [1]}, Errcode.BAD_JSON),
        ({"keys": {"ed25519:DEVICE": 1}}, Errcode.BAD_JSON),
        ({"signatures": {ALICE: {"ed25519:DEVICE": 1}}}, Errcode.BAD_JSON),
        ({"signatures": None}, Errcode.BAD_JSON),
        ({"padding": "x" * MAX_DEVICE_KEYS_BYTES}, Errcode.TOO_LARGE),
    ],
)
def test_bad_device_keys_are_refused(change: JsonDict, errcode: Errcode) -> None:
    uploaded = {**_device_keys(generate_signing_key(DEVICE)), **change}
    with pytest.raises(MatrixError) as error:
        check_device_keys(uploaded, ALICE, DEVICE)
    assert _errcode(error) == errcode


def test_device_keys_must_be_an_object() -> None:
    with pytest.raises(MatrixError) as error:
        check_device_keys([], ALICE, DEVICE)
    assert _errcode(error) == Errcode.BAD_JSON


def test_the_identity_key_is_the_devices_ed25519_key_if_it_is_one() -> None:
    key = generate_signing_key(DEVICE)
    identity = device_identity_key(_device_keys(key), DEVICE)
    assert identity is not None
    assert identity.encode() == get_verify_key(key).encode()
    assert device_identity_key({"keys": {}}, DEVICE) is None
    assert device_identity_key({"keys": {"ed25519:DEVICE": "not base64!"}}, DEVICE) is None


def test_one_time_and_fallback_keys_are_split_by_name() -> None:
    keys = {
        "curve25519:AAA": "plain",
        "signed_curve25519:BBB": {"key": "k", "signatures": {}, "unsigned": {"x": 1}},
    }
    assert check_key_map(keys, "one_time_keys", 10) == [
        ("curve25519", "AAA", "plain"),
        ("signed_curve25519", "BBB", {"key": "k", "signatures": {}}),
    ]


@pytest.mark.parametrize(
    ("keys", "errcode"),
    [
        ([], Errcode.BAD_JSON),
        ({"curve25519": "k"}, Errcode.BAD_JSON),
        ({":AAA": "k"}, Errcode.BAD_JSON),
        ({"curve25519:A:B": "k"}, Errcode.BAD_JSON),
        ({"curve25519:" + "A" * MAX_IDENTIFIER_LENGTH: "k"}, Errcode.TOO_LARGE),
        ({"curve25519:AAA": 1}, Errcode.BAD_JSON),
        ({"curve25519:AAA": {"key": 1}}, Errcode.BAD_JSON),
        ({"curve25519:AAA": {"key": "k", "signatures": []}}, Errcode.BAD_JSON),
        ({"curve25519:AAA": "x" * 5000}, Errcode.TOO_LARGE),
        ({"a:1": "k", "a:2": "k", "a:3": "k"}, Errcode.TOO_LARGE),
    ],
)
def test_bad_key_maps_are_refused(keys: Any, errcode: Errcode) -> None:
    with pytest.raises(MatrixError) as error:
        check_key_map(keys, "one_time_keys", 2)
    assert _errcode(error) == errcode


def test_a_signed_key_must_be_signed_by_its_device() -> None:
    key, other = generate_signing_key(DEVICE), generate_signing_key(DEVICE)
    identity = get_verify_key(key)
    check_key_signature(sign_json({"key": "k"}, ALICE, key), "a:1", ALICE, DEVICE, identity)
    # Unsigned (string) keys and devices without an ed25519 key are not checked.
    check_key_signature("k", "a:1", ALICE, DEVICE, identity)
    check_key_signature(sign_json({"key": "k"}, ALICE, other), "a:1", ALICE, DEVICE, None)
    with pytest.raises(MatrixError) as error:
        check_key_signature(sign_json({"key": "k"}, ALICE, other), "a:1", ALICE, DEVICE, identity)
    assert _errcode(error) == Errcode.INVALID_SIGNATURE


def test_a_reuploaded_one_time_key_may_differ_only_in_signatures() -> None:
    assert same_one_time_key('{"key":"k","signatures":{"@a:test":{}}}', {"key": "k"})
    assert not same_one_time_key('{"key":"k"}', {"key": "other"})
    assert same_one_time_key('"k"', "k")
    assert not same_one_time_key('"k"', {"key": "k"})


# Cross-signing -------------------------------------------------------------------------


def test_a_cross_signing_key_holds_one_ed25519_key_of_its_user() -> None:
    key = cross_signing_signing_key()
    body = {**_cross_signing_key(ALICE, MASTER, key).json, "unsigned": {}}
    checked = check_cross_signing_key(body, ALICE, MASTER)
    assert (checked.key_type, checked.public_key) == (MASTER, key.version)
    assert checked.verify_key.encode() == get_verify_key(key).encode()
    assert "unsigned" not in checked.json


@pytest.mark.parametrize(
    ("change", "errcode"),
    [
        ({"user_id": BOB}, Errcode.INVALID_PARAM),
        ({"usage": [SELF_SIGNING]}, Errcode.INVALID_PARAM),
        ({"keys": {}}, Errcode.INVALID_PARAM),
        ({"keys": {"ed25519:abc": "def"}}, Errcode.INVALID_PARAM),
        ({"keys": {"ed25519:!!": "!!"}}, Errcode.INVALID_PARAM),
        ({"signatures": {ALICE: []}}, Errcode.BAD_JSON),
        ({"padding": "x" * 16 * 1024}, Errcode.TOO_LARGE),
    ],
)
def test_bad_cross_signing_keys_are_refused(change: JsonDict, errcode: Errcode) -> None:
    body = {**_cross_signing_key(ALICE, MASTER, cross_signing_signing_key()).json, **change}
    with pytest.raises(MatrixError) as error:
        check_cross_signing_key(body, ALICE, MASTER)
    assert _errcode(error) == errcode


def test_self_and_user_signing_keys_must_be_signed_by_the_master_key() -> None:
    master_key = cross_signing_signing_key()
    master = _cross_signing_key(ALICE, MASTER, master_key)
    signed = _cross_signing_key(ALICE, SELF_SIGNING, cross_signing_signing_key(), master_key)
    unsigned = _cross_signing_key(ALICE, USER_SIGNING, cross_signing_signing_key())
    check_signed_by_master([master, signed], ALICE, master)
    with pytest.raises(MatrixError) as error:
        check_signed_by_master([signed, unsigned], ALICE, master)
    assert _errcode(error) == Errcode.INVALID_SIGNATURE


def test_a_device_signs_its_users_master_key() -> None:
    device_key, master_key = generate_signing_key(DEVICE), cross_signing_signing_key()
    master = _cross_signing_key(ALICE, MASTER, master_key)
    keys = {(ALICE, MASTER): master}
    devices: dict[str, JsonDict] = {DEVICE: _device_keys(device_key)}
    signed = sign_json(master.json, ALICE, device_key)
    found = own_signatures(ALICE, master.public_key, signed, keys, devices)
    assert found == {f"ed25519:{DEVICE}": signed["signatures"][ALICE][f"ed25519:{DEVICE}"]}
    forged = sign_json(master.json, ALICE, generate_signing_key(DEVICE))
    with pytest.raises(MatrixError) as error:
        own_signatures(ALICE, master.public_key, forged, keys, devices)
    assert _errcode(error) == Errcode.INVALID_SIGNATURE


def test_the_self_signing_key_signs_the_users_devices() -> None:
    self_key = cross_signing_signing_key()
    keys = {(ALICE, SELF_SIGNING): _cross_signing_key(ALICE, SELF_SIGNING, self_key)}
    device = _device_keys(generate_signing_key(DEVICE))
    devices: dict[str, JsonDict] = {DEVICE: device}
    signed = sign_json(device, ALICE, self_key)
    key_id = f"ed25519:{self_key.version}"
    found = own_signatures(ALICE, DEVICE, signed, keys, devices)
    assert found == {key_id: signed["signatures"][ALICE][key_id]}

    changed = sign_json({**device, "algorithms": []}, ALICE, self_key)
    unsigned = sign_json(device, ALICE, generate_signing_key(DEVICE))
    for target_id, body, cross_signing, errcode in [
        (DEVICE, changed, keys, Errcode.INVALID_PARAM),
        (DEVICE, unsigned, keys, Errcode.INVALID_SIGNATURE),
        ("OTHER", signed, keys, Errcode.NOT_FOUND),
        (DEVICE, signed, {}, Errcode.NOT_FOUND),
    ]:
        with pytest.raises(MatrixError) as error:
            own_signatures(ALICE, target_id, body, cross_signing, devices)
        assert _errcode(error) == errcode


def test_the_user_signing_key_signs_other_users_master_keys() -> None:
    user_key, bob_master_key = cross_signing_signing_key(), cross_signing_signing_key()
    bob_master = _cross_signing_key(BOB, MASTER, bob_master_key)
    keys = {
        (ALICE, USER_SIGNING): _cross_signing_key(ALICE, USER_SIGNING, user_key),
        (BOB, MASTER): bob_master,
    }
    signed = sign_json(bob_master.json, ALICE, user_key)
    key_id = f"ed25519:{user_key.version}"
    found = other_signature(ALICE, BOB, bob_master.public_key, signed, keys)
    assert found == {key_id: signed["signatures"][ALICE][key_id]}

    forged = sign_json(bob_master.json, ALICE, cross_signing_signing_key())
    for target_id, body, cross_signing, errcode in [
        ("other", signed, keys, Errcode.NOT_FOUND),
        (bob_master.public_key, signed, {(BOB, MASTER): bob_master}, Errcode.NOT_FOUND),
        (bob_master.public_key, forged, keys, Errcode.INVALID_SIGNATURE),
    ]:
        with pytest.raises(MatrixError) as error:
            other_signature(ALICE, BOB, target_id, body, cross_signing)
        assert _errcode(error) == errcode
