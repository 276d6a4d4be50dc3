"""Keys, signed JSON and event signatures (Appendices, "Signing JSON" and
"Cryptographic Test Vectors"; Server-Server API, "Signing Events")."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from unpaddedbase64 import decode_base64, encode_base64

from peyvand.events.hashes import add_content_hash, check_content_hash
from peyvand.events.redaction import redact
from peyvand.events.room_versions import ROOM_V10, ROOM_V11, ROOM_V12, RoomVersion
from peyvand.events.signing import (
    SigningKey,
    decode_verify_key,
    format_signing_keys,
    generate_signing_key,
    get_verify_key,
    key_id,
    parse_signing_keys,
    sign_event,
    sign_json,
    verify_event_signature,
    verify_json_signature,
    verify_key_base64,
)
from peyvand.types import ServerName

ALL = [ROOM_V10, ROOM_V11, ROOM_V12]
ids = [v.identifier for v in ALL]

# Appendices, "Cryptographic Test Vectors" > "Signing Key".
SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
SPEC_SERVER = ServerName("domain")
# The published signatures ("JSON Signing", "Event Signing").
SIG_EMPTY = "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
SIG_ONE_TWO = (
    "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
)
SIG_MINIMAL_EVENT = (
    "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
)
SIG_MESSAGE_EVENT = (
    "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
)


@pytest.fixture
def spec_key() -> SigningKey:
    """The spec's test key, ``ed25519:1`` for server ``domain``."""
    return parse_signing_keys(f"ed25519 1 {SPEC_SEED}\n")[0]


# --- Appendices, "Cryptographic Test Vectors" -------------------------------------------


def test_spec_json_signing_of_empty_object(spec_key: SigningKey) -> None:
    assert sign_json({}, SPEC_SERVER, spec_key) == {
        "signatures": {"domain": {"ed25519:1": SIG_EMPTY}}
    }


def test_spec_json_signing_with_data(spec_key: SigningKey) -> None:
    assert sign_json({"one": 1, "two": "Two"}, SPEC_SERVER, spec_key) == {
        "one": 1,
        "signatures": {"domain": {"ed25519:1": SIG_ONE_TWO}},
        "two": "Two",
    }


def test_spec_event_signing_minimal_event(spec_key: SigningKey) -> None:
    # The vectors predate v11 and keep `origin`, so they follow the v10 redaction rules.
    data = {
        "room_id": "!x:domain",
        "sender": "@a:domain",
        "origin": "domain",
        "origin_server_ts": 1000000,
        "signatures": {},
        "hashes": {},
        "type": "X",
        "content": {},
        "prev_events": [],
        "auth_events": [],
        "depth": 3,
        "unsigned": {"age_ts": 1000000},
    }
    signed = sign_event(add_content_hash(data), ROOM_V10, SPEC_SERVER, spec_key)
    assert signed == {
        "auth_events": [],
        "content": {},
        "depth": 3,
        "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
        "origin": "domain",
        "origin_server_ts": 1000000,
        "prev_events": [],
        "room_id": "!x:domain",
        "sender": "@a:domain",
        "signatures": {"domain": {"ed25519:1": SIG_MINIMAL_EVENT}},
        "type": "X",
        "unsigned": {"age_ts": 1000000},
    }


def test_spec_event_signing_redactable_event(spec_key: SigningKey) -> None:
    data = {
        "content": {"body": "Here is the message content"},
        "event_id": "$0:domain",
        "origin": "domain",
        "origin_server_ts": 1000000,
        "type": "m.room.message",
        "room_id": "!r:domain",
        "sender": "@u:domain",
        "signatures": {},
        "unsigned": {"age_ts": 1000000},
    }
    signed = sign_event(add_content_hash(data), ROOM_V10, SPEC_SERVER, spec_key)
    assert signed == {
        "content": {"body": "Here is the message content"},
        "event_id": "$0:domain",
        "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
        "origin": "domain",
        "origin_server_ts": 1000000,
        "type": "m.room.message",
        "room_id": "!r:domain",
        "sender": "@u:domain",
        "signatures": {"domain": {"ed25519:1": SIG_MESSAGE_EVENT}},
        "unsigned": {"age_ts": 1000000},
    }
    verify_key = get_verify_key(spec_key)
    assert verify_event_signature(signed, ROOM_V10, SPEC_SERVER, verify_key)


# --- Keys -------------------------------------------------------------------------------


def test_spec_key_identity(spec_key: SigningKey) -> None:
    assert key_id(spec_key) == "ed25519:1"
    assert spec_key.encode() == decode_base64(SPEC_SEED)


# The published seed has non-zero trailing bits in its last Base64 character; written
# back out, the same 32 bytes encode canonically.
CANONICAL_SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA0"


def test_key_file_round_trip(spec_key: SigningKey) -> None:
    other = generate_signing_key("a_bcDE")
    text = format_signing_keys([spec_key, other])
    assert (
        text == f"ed25519 1 {CANONICAL_SPEC_SEED}\ned25519 a_bcDE {encode_base64(other.encode())}\n"
    )
    parsed = parse_signing_keys("\n" + text + "  \n")
    assert [(k.version, k.encode()) for k in parsed] == [
        ("1", spec_key.encode()),
        ("a_bcDE", other.encode()),
    ]


@pytest.mark.parametrize(
    "line",
    [
        "ed25519 1",
        f"ed25519 1 {SPEC_SEED} extra",
        f"curve25519 1 {SPEC_SEED}",
        "ed25519 1 c2hvcnQ",  # a 5-byte seed
        "ed25519 1 ***",
    ],
)
def test_malformed_key_lines_are_refused(line: str) -> None:
    with pytest.raises(ValueError, match="signing key line 2"):
        parse_signing_keys(f"ed25519 1 {SPEC_SEED}\n{line}\n")


def test_verify_key_round_trip(signing_key: SigningKey) -> None:
    verify_key = decode_verify_key(key_id(signing_key), verify_key_base64(signing_key))
    assert key_id(verify_key) == key_id(signing_key)
    assert verify_json_signature(
        sign_json({"a": 1}, ServerName("x"), signing_key), ServerName("x"), verify_key
    )


def test_verify_key_of_spec_seed(spec_key: SigningKey) -> None:
    assert len(decode_base64(verify_key_base64(spec_key))) == 32
    assert verify_key_base64(spec_key) == encode_base64(spec_key.verify_key.encode())


@pytest.mark.parametrize(
    ("identifier", "key_b64"),
    [("curve25519:1", "AAAA"), ("ed25519", "AAAA"), ("ed25519:1", "AAAA"), ("ed25519:1", "é")],
)
def test_decode_verify_key_refuses_bad_input(identifier: str, key_b64: str) -> None:
    with pytest.raises(ValueError):
        decode_verify_key(identifier, key_b64)


# --- Signed JSON ------------------------------------------------------------------------


def test_sign_json_keeps_unsigned_and_other_signatures_without_mutating(
    signing_key: SigningKey,
) -> None:
    obj = {"a": 1, "unsigned": {"age": 1}, "signatures": {"other": {"ed25519:x": "sig"}}}
    before = copy.deepcopy(obj)
    signed = sign_json(obj, ServerName("me"), signing_key)
    assert obj == before
    assert signed["unsigned"] == {"age": 1}
    assert signed["signatures"]["other"] == {"ed25519:x": "sig"}
    assert set(signed["signatures"]["me"]) == {key_id(signing_key)}


def test_verify_json_signature_detects_tampering(signing_key: SigningKey) -> None:
    verify_key = get_verify_key(signing_key)
    signed = sign_json({"a": 1, "b": [1, 2]}, ServerName("me"), signing_key)
    assert verify_json_signature(signed, ServerName("me"), verify_key)
    assert verify_json_signature({**signed, "unsigned": {"x": 1}}, ServerName("me"), verify_key)
    assert not verify_json_signature({**signed, "a": 2}, ServerName("me"), verify_key)
    assert not verify_json_signature({**signed, "c": None}, ServerName("me"), verify_key)
    assert not verify_json_signature(signed, ServerName("someone-else"), verify_key)
    other_key = get_verify_key(generate_signing_key(signing_key.version))
    assert not verify_json_signature(signed, ServerName("me"), other_key)


@pytest.mark.parametrize(
    "signatures",
    [
        None,
        "x",
        {"me": "x"},
        {"me": {}},
        {"me": {"ed25519:test": 5}},
        {"me": {"ed25519:test": "***"}},
        {"me": {"ed25519:test": "é"}},
        {"me": {"ed25519:test": "AAAA"}},  # wrong length
    ],
)
def test_verify_json_signature_refuses_malformed_signatures(
    signing_key: SigningKey, signatures: Any
) -> None:
    obj: dict[str, Any] = {"a": 1, "signatures": signatures}
    if signatures is None:
        del obj["signatures"]
    assert not verify_json_signature(obj, ServerName("me"), get_verify_key(signing_key))


# --- Event signatures -------------------------------------------------------------------


def message_event() -> dict[str, Any]:
    return add_content_hash(
        {
            "type": "m.room.message",
            "room_id": "!r:x",
            "sender": "@u:x",
            "content": {"body": "hi"},
            "depth": 2,
            "prev_events": ["$p"],
            "auth_events": ["$a"],
            "origin_server_ts": 7,
        }
    )


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_event_signature_round_trip(version: RoomVersion, signing_key: SigningKey) -> None:
    verify_key = get_verify_key(signing_key)
    data = message_event()
    signed = sign_event(data, version, ServerName("x"), signing_key)
    assert "signatures" not in data
    assert {k: v for k, v in signed.items() if k != "signatures"} == data
    assert verify_event_signature(signed, version, ServerName("x"), verify_key)
    assert verify_event_signature(redact(signed, version), version, ServerName("x"), verify_key)
    assert verify_event_signature(
        {**signed, "unsigned": {"age": 1}}, version, ServerName("x"), verify_key
    )


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_event_signature_covers_essential_keys_and_the_hash(
    version: RoomVersion, signing_key: SigningKey
) -> None:
    verify_key = get_verify_key(signing_key)
    signed = sign_event(message_event(), version, ServerName("x"), signing_key)
    for key, value in [
        ("sender", "@mallory:x"),
        ("type", "m.room.topic"),
        ("depth", 3),
        ("prev_events", []),
        ("hashes", {"sha256": "AAAA"}),
    ]:
        assert not verify_event_signature(
            {**signed, key: value}, version, ServerName("x"), verify_key
        )


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_tampered_content_keeps_the_signature_but_fails_the_hash(
    version: RoomVersion, signing_key: SigningKey
) -> None:
    # "Validating hashes and signatures on received events": content outside the
    # redacted form is protected by the content hash, not by the signature.
    signed = sign_event(message_event(), version, ServerName("x"), signing_key)
    tampered = {**signed, "content": {"body": "tampered"}}
    assert verify_event_signature(tampered, version, ServerName("x"), get_verify_key(signing_key))
    assert check_content_hash(signed)
    assert not check_content_hash(tampered)


def test_sign_event_adds_to_existing_signatures(signing_key: SigningKey) -> None:
    first = sign_event(message_event(), ROOM_V11, ServerName("x"), signing_key)
    other = generate_signing_key("o")
    both = sign_event(first, ROOM_V11, ServerName("y"), other)
    assert set(both["signatures"]) == {"x", "y"}
    assert verify_event_signature(both, ROOM_V11, ServerName("x"), get_verify_key(signing_key))
    assert verify_event_signature(both, ROOM_V11, ServerName("y"), get_verify_key(other))


def test_signature_depends_on_redaction_rules(signing_key: SigningKey) -> None:
    verify_key = get_verify_key(signing_key)
    data = {**message_event(), "origin": "x"}
    signed_v10 = sign_event(data, ROOM_V10, ServerName("x"), signing_key)
    assert verify_event_signature(signed_v10, ROOM_V10, ServerName("x"), verify_key)
    assert not verify_event_signature(signed_v10, ROOM_V11, ServerName("x"), verify_key)
