"""Content hash, reference hash and event IDs (Server-Server API, "Signing Events")."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from typing import Any

import pytest

from peyvand.events.hashes import (
    add_content_hash,
    check_content_hash,
    compute_content_hash,
    compute_event_id,
    compute_reference_hash,
)
from peyvand.events.room_versions import ROOM_V10, ROOM_V11, ROOM_V12, RoomVersion

ALL = [ROOM_V10, ROOM_V11, ROOM_V12]
ids = [v.identifier for v in ALL]

# Appendices, "Event Signing": the two events and their published content hashes.
MINIMAL_EVENT: dict[str, Any] = {
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
MESSAGE_EVENT: dict[str, Any] = {
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


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (MINIMAL_EVENT, "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"),
        (MESSAGE_EVENT, "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"),
    ],
)
def test_spec_content_hashes(data: dict[str, Any], expected: str) -> None:
    assert add_content_hash(data)["hashes"] == {"sha256": expected}


def test_content_hash_ignores_unsigned_signatures_and_hashes() -> None:
    changed = {
        **MESSAGE_EVENT,
        "unsigned": {"age": 1},
        "signatures": {"x": {"ed25519:1": "s"}},
        "hashes": {"sha256": "bogus"},
    }
    assert compute_content_hash(changed) == compute_content_hash(MESSAGE_EVENT)


def test_content_hash_covers_content() -> None:
    changed = {**MESSAGE_EVENT, "content": {"body": "Something else"}}
    assert compute_content_hash(changed) != compute_content_hash(MESSAGE_EVENT)


def test_add_content_hash_returns_a_copy_and_keeps_other_algorithms() -> None:
    data = {**MESSAGE_EVENT, "hashes": {"sha512": "other"}}
    before = copy.deepcopy(data)
    hashed = add_content_hash(data)
    assert data == before
    assert hashed["hashes"]["sha512"] == "other"
    assert check_content_hash(hashed)


def test_check_content_hash_detects_tampering() -> None:
    hashed = add_content_hash(MESSAGE_EVENT)
    assert check_content_hash(hashed)
    assert check_content_hash({**hashed, "unsigned": {"age": 99}})
    assert not check_content_hash({**hashed, "content": {"body": "tampered"}})
    assert not check_content_hash({**hashed, "origin_server_ts": 1})


@pytest.mark.parametrize(
    "hashes", [None, {}, {"sha256": 5}, {"sha256": "!!!not base64"}, {"sha256": "é"}, "x"]
)
def test_check_content_hash_refuses_missing_or_malformed_hashes(hashes: Any) -> None:
    data = {**MESSAGE_EVENT, "hashes": hashes}
    if hashes is None:
        del data["hashes"]
    assert not check_content_hash(data)


def reference_oracle(redacted: dict[str, Any]) -> bytes:
    """The spec's recipe with the standard library, for an already-redacted event."""
    body = {k: v for k, v in redacted.items() if k not in ("signatures", "unsigned")}
    encoded = json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(encoded.encode()).digest()


def v11_event() -> dict[str, Any]:
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
            "signatures": {"x": {"ed25519:1": "sig"}},
            "unsigned": {"age": 3},
        }
    )


def test_reference_hash_and_event_id_match_the_spec_recipe() -> None:
    data = v11_event()
    redacted = {**data, "content": {}}
    expected = reference_oracle(redacted)
    assert compute_reference_hash(data, ROOM_V11) == expected
    assert compute_event_id(data, ROOM_V11) == "$" + base64.urlsafe_b64encode(
        expected
    ).decode().rstrip("=")


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_event_id_format(version: RoomVersion) -> None:
    assert re.fullmatch(r"\$[A-Za-z0-9_-]{43}", compute_event_id(v11_event(), version))


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_event_id_is_stable_under_unsigned_and_signatures(version: RoomVersion) -> None:
    data = v11_event()
    event_id = compute_event_id(data, version)
    assert compute_event_id({**data, "unsigned": {"age": 1000, "x": [1]}}, version) == event_id
    without_unsigned = {k: v for k, v in data.items() if k != "unsigned"}
    assert compute_event_id(without_unsigned, version) == event_id
    resigned = {**data, "signatures": {"y": {"ed25519:2": "other"}}}
    assert compute_event_id(resigned, version) == event_id


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_event_id_covers_content_through_the_content_hash(version: RoomVersion) -> None:
    data = v11_event()
    event_id = compute_event_id(data, version)
    edited = {**data, "content": {"body": "edited"}}
    # The reference hash is over the redacted event: content only counts via `hashes`.
    assert compute_event_id(edited, version) == event_id
    assert compute_event_id(add_content_hash(edited), version) != event_id
    assert compute_event_id({**data, "depth": 3}, version) != event_id


def test_event_id_depends_on_redaction_rules() -> None:
    data = {**v11_event(), "origin": "x"}
    assert compute_event_id(data, ROOM_V10) != compute_event_id(data, ROOM_V11)
    assert compute_event_id(data, ROOM_V11) == compute_event_id(data, ROOM_V12)
