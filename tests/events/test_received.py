"""Validating received PDUs (Server-Server API, "Checks performed on receipt of a PDU"
steps 1 and 3; rooms v10-v12 "Event format"; Client-Server API, "Size limits")."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peyvand.events.builder import MAX_PDU_SIZE, build_pdu, room_id_from_create_event_id
from peyvand.events.canonical_json import MAX_INT, MIN_INT, encode_canonical_json
from peyvand.events.hashes import compute_event_id
from peyvand.events.pdu import Pdu
from peyvand.events.received import InvalidPdu, check_content_hash_or_redact, parse_pdu
from peyvand.events.redaction import redact
from peyvand.events.room_versions import ROOM_V10, ROOM_V11, ROOM_V12, RoomVersion
from peyvand.events.signing import generate_signing_key, get_verify_key, verify_event_signature
from peyvand.types import JsonDict, RoomID, ServerName, UserID

ALL = [ROOM_V10, ROOM_V11, ROOM_V12]
ids = [v.identifier for v in ALL]
KEY = generate_signing_key("test")
ALICE = UserID("@alice:x")


def _build(version: RoomVersion, **args: Any) -> Pdu:
    defaults: dict[str, Any] = {
        "sender": ALICE,
        "content": {},
        "origin_server_ts": 1_700_000_000_000,
        "origin_server_name": "x",
        "signing_key": KEY,
    }
    return build_pdu(version, **{**defaults, **args})


@cache
def room(version: RoomVersion) -> tuple[Pdu, Pdu, Pdu, Pdu]:
    """A real (signed, hashed) create, join, message and redaction of one room."""
    v12 = version.room_id_is_create_event_hash
    create = _build(
        version,
        room_id=None if v12 else RoomID("!room:x"),
        event_type="m.room.create",
        state_key="",
        content={"room_version": version.identifier},
        prev_events=[],
        auth_events=[],
        depth=1,
    )
    room_id = create.room_id
    auth = [] if v12 else [create.event_id]
    join = _build(
        version,
        room_id=room_id,
        event_type="m.room.member",
        state_key=ALICE,
        content={"membership": "join"},
        prev_events=[create.event_id],
        auth_events=auth,
        depth=2,
    )
    message = _build(
        version,
        room_id=room_id,
        event_type="m.room.message",
        content={"msgtype": "m.text", "body": "hello", "n": {"x": [MIN_INT, MAX_INT, None]}},
        prev_events=[join.event_id],
        auth_events=[*auth, join.event_id],
        depth=3,
    )
    redaction = _build(
        version,
        room_id=room_id,
        event_type="m.room.redaction",
        content={"reason": "oops"},
        redacts=message.event_id,
        prev_events=[message.event_id],
        auth_events=[*auth, join.event_id],
        depth=4,
    )
    return create, join, message, redaction


def received(pdu: Pdu) -> JsonDict:
    """``pdu`` as another server sends it: plain JSON, as parsed off the wire."""
    data: JsonDict = json.loads(json.dumps(pdu.data))
    return data


def message_data(version: RoomVersion) -> JsonDict:
    return received(room(version)[2])


def a_hash_id(sigil: str, seed: str = "other") -> str:
    event_id = compute_event_id({"type": seed, "content": {}}, ROOM_V12)
    return sigil + event_id[1:]


# --- valid events ------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_real_events_round_trip(version: RoomVersion) -> None:
    for pdu in room(version):
        parsed = parse_pdu(received(pdu), version, room_id=pdu.room_id)
        assert parsed.event_id == pdu.event_id
        assert parsed.data == pdu.data
        assert parsed.room_version is version
        assert parsed.room_id == pdu.room_id
        assert verify_event_signature(parsed.data, version, ServerName("x"), get_verify_key(KEY))
        # Without a room to match, too.
        assert parse_pdu(received(pdu), version).event_id == pdu.event_id


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_redacts_where_the_version_wants_it(version: RoomVersion) -> None:
    _, _, message, redaction = room(version)
    parsed = parse_pdu(received(redaction), version)
    assert parsed.redacts == message.event_id
    assert ("redacts" in parsed.content) is version.redacts_in_content


def test_v12_create_event_room_id_is_its_event_id() -> None:
    create = room(ROOM_V12)[0]
    parsed = parse_pdu(
        received(create), ROOM_V12, room_id=room_id_from_create_event_id(create.event_id)
    )
    assert "room_id" not in parsed.data
    assert parsed.room_id == "!" + create.event_id[1:]


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_boundaries_are_accepted(version: RoomVersion) -> None:
    data = message_data(version)
    data["depth"] = MAX_INT
    data["content"] = {"low": MIN_INT, "high": MAX_INT, "t": True, "n": None}
    data["type"] = "t" * 255
    data["state_key"] = "é" * 127 + "a"  # 255 bytes
    data["prev_events"] = [a_hash_id("$", str(i)) for i in range(20)]
    data["auth_events"] = [a_hash_id("$", str(i)) for i in range(10)]
    parse_pdu(data, version)
    parse_pdu({**data, "depth": 0}, version)


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_size_limit_is_inclusive(version: RoomVersion) -> None:
    data = message_data(version)
    data["content"]["pad"] = ""
    data["content"]["pad"] = "x" * (MAX_PDU_SIZE - len(encode_canonical_json(data)))
    assert len(encode_canonical_json(data)) == MAX_PDU_SIZE
    parse_pdu(data, version)
    data["content"]["pad"] += "x"
    with pytest.raises(InvalidPdu, match="larger than"):
        parse_pdu(data, version)


def test_deepest_content_the_builder_allows_is_accepted() -> None:
    content: dict[str, Any] = {}
    deepest: dict[str, Any] | None = None
    for _ in range(200):
        try:
            pdu = _build(
                ROOM_V11,
                room_id=RoomID("!room:x"),
                event_type="m.room.message",
                content=content,
                prev_events=[],
                auth_events=[],
                depth=1,
            )
        except ValueError:
            break
        deepest = received(pdu)
        content = {"a": content}
    assert deepest is not None
    assert parse_pdu(deepest, ROOM_V11).data == deepest
    too_deep = copy.deepcopy(deepest)
    too_deep["content"] = {"a": too_deep["content"]}
    with pytest.raises(InvalidPdu, match="nested too deeply"):
        parse_pdu(too_deep, ROOM_V11)


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_extra_top_level_keys_are_kept(version: RoomVersion) -> None:
    data = message_data(version)
    data["org.example.custom"] = {"k": 1}
    parsed = parse_pdu(data, version)
    assert parsed.data["org.example.custom"] == {"k": 1}


def test_the_pdu_does_not_alias_the_input() -> None:
    data = message_data(ROOM_V12)
    parsed = parse_pdu(data, ROOM_V12)
    data["content"]["body"] = "changed"
    data["prev_events"].append("$x")
    assert parsed.content["body"] == "hello"
    assert len(parsed.prev_event_ids) == 1


# --- unsigned: never a reason to drop, filtered like Synapse --------------------------


@pytest.mark.parametrize("version", ALL, ids=ids)
@pytest.mark.parametrize(
    ("unsigned", "kept"),
    [
        ({"age": 42}, {"age": 42}),
        ([], None),
        ("junk", None),
        ({"age": 1.5, "x": 1}, {}),
        ({"age": True}, {}),
        ({"age": 2**60}, {}),
        ({"redacted_because": {"f": 1.5}, "age": 3}, {"age": 3}),
        ({"m.relations": {"x": "\x00"}}, {}),
        ({"pad": "x" * (MAX_PDU_SIZE + 1)}, {}),
        ({"invite_room_state": [{"type": "m.room.name"}]}, {}),  # only for m.room.member
    ],
)
def test_unsigned_is_filtered_not_validated(
    version: RoomVersion, unsigned: object, kept: JsonDict | None
) -> None:
    pdu = room(version)[2]
    data = received(pdu)
    data["unsigned"] = unsigned
    parsed = parse_pdu(data, version)
    assert parsed.event_id == pdu.event_id
    assert parsed.data.get("unsigned") == kept


def test_member_events_keep_stripped_state_in_unsigned() -> None:
    data = received(room(ROOM_V12)[1])
    state = [{"type": "m.room.name", "state_key": "", "sender": "@a:x", "content": {"name": "R"}}]
    data["unsigned"] = {"invite_room_state": state, "knock_room_state": [1.5], "other": 1}
    assert parse_pdu(data, ROOM_V12).data["unsigned"] == {"invite_room_state": state}


# --- invalid events -------------------------------------------------------------------

Mutation = Callable[[JsonDict], object]


def _set(path: str, value: object) -> Mutation:
    """Set ``a.b.c`` in the event to ``value``."""

    def mutate(data: JsonDict) -> None:
        *parents, last = path.split(".")
        target = data
        for key in parents:
            target = target[key]
        target[last] = value

    return mutate


def _drop(key: str) -> Mutation:
    def mutate(data: JsonDict) -> None:
        del data[key]

    return mutate


INVALID: dict[str, Mutation] = {
    # Canonical JSON values.
    "float in nested content": _set("content.n", {"x": [1, {"y": 1.5}]}),
    "float at top level": _set("origin_server_ts", 1.0),
    "nan": _set("content.n", float("nan")),
    "int 2**53": _set("content.n", 2**53),
    "int -(2**53)": _set("content.n", -(2**53)),
    "lone surrogate": _set("content.body", "\ud800"),
    "non-string key": _set("content.n", {1: "x"}),
    "tuple": _set("content.n", (1, 2)),
    # NUL.
    "NUL in content string": _set("content.body", "a\x00b"),
    "NUL in content key": _set("content.n", {"a\x00": 1}),
    "NUL in nested list": _set("content.n", [["\x00"]]),
    "NUL in state_key": _set("state_key", "\x00"),
    "NUL in type": _set("type", "m.room.\x00message"),
    "NUL in a signature": _set("signatures.x", {"ed25519:test": "\x00"}),
    # Sizes.
    "oversize event": _set("content.body", "x" * MAX_PDU_SIZE),
    "oversize type": _set("type", "t" * 256),
    "oversize state_key (bytes)": _set("state_key", "é" * 128),
    "oversize sender": _set("sender", "@" + "a" * 260 + ":x"),
    # Depth.
    "negative depth": _set("depth", -1),
    "depth 2**53": _set("depth", 2**53),
    "depth bool": _set("depth", True),
    "depth string": _set("depth", "3"),
    "depth null": _set("depth", None),
    # Types.
    "type int": _set("type", 1),
    "sender int": _set("sender", 1),
    "origin_server_ts string": _set("origin_server_ts", "1"),
    "origin_server_ts bool": _set("origin_server_ts", False),
    "content array": _set("content", []),
    "content string": _set("content", "x"),
    "state_key int": _set("state_key", 1),
    "state_key null": _set("state_key", None),
    "prev_events string": _set("prev_events", "$a"),
    "prev_events int entry": _set("prev_events", [1]),
    "prev_events v1 pairs": _set("prev_events", [["$a", {"sha256": "x"}]]),
    "prev_events not an event ID": _set("prev_events", ["a"]),
    "auth_events null entry": _set("auth_events", [None]),
    "auth_events object": _set("auth_events", {}),
    "auth_events oversize ID": _set("auth_events", ["$" + "a" * 255]),
    "hashes string": _set("hashes", "x"),
    "hashes without sha256": _set("hashes", {}),
    "hashes sha256 int": _set("hashes", {"sha256": 1}),
    "signatures array": _set("signatures", []),
    "signatures of a string": _set("signatures", {"x": "sig"}),
    "signature int": _set("signatures", {"x": {"ed25519:test": 1}}),
    "room_id int": _set("room_id", 1),
    "event_id present": _set("event_id", "$abc"),
    # Counts.
    "21 prev_events": _set("prev_events", [a_hash_id("$", str(i)) for i in range(21)]),
    "11 auth_events": _set("auth_events", [a_hash_id("$", str(i)) for i in range(11)]),
    # Sender.
    "sender no sigil": _set("sender", "alice:x"),
    "sender no domain": _set("sender", "@alice"),
    "sender empty localpart": _set("sender", "@:x"),
    "sender space": _set("sender", "@al ice:x"),
    "sender bad server name": _set("sender", "@alice:bad server"),
    "sender room ID": _set("sender", "!alice:x"),
}
REQUIRED = [
    "type",
    "sender",
    "origin_server_ts",
    "content",
    "depth",
    "prev_events",
    "auth_events",
    "hashes",
    "signatures",
    "room_id",
]
INVALID.update({f"missing {key}": _drop(key) for key in REQUIRED})


@pytest.mark.parametrize("version", ALL, ids=ids)
@pytest.mark.parametrize("mutation", INVALID.values(), ids=INVALID.keys())
def test_invalid_events_are_rejected(version: RoomVersion, mutation: Mutation) -> None:
    data = message_data(version)
    mutation(data)
    with pytest.raises(InvalidPdu):
        parse_pdu(data, version)


@pytest.mark.parametrize("data", [[], "x", None, 1, 1.5, True, ["type"]])
def test_non_objects_are_rejected(data: object) -> None:
    with pytest.raises(InvalidPdu, match="JSON object"):
        parse_pdu(data, ROOM_V12)


def test_v10_top_level_redacts_must_be_a_string() -> None:
    data = received(room(ROOM_V10)[3])
    data["redacts"] = 1
    with pytest.raises(InvalidPdu, match="redacts"):
        parse_pdu(data, ROOM_V10)


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_room_id_must_match_the_request(version: RoomVersion) -> None:
    data = message_data(version)
    other = "!other:x" if not version.room_id_is_create_event_hash else a_hash_id("!")
    with pytest.raises(InvalidPdu, match="not"):
        parse_pdu(data, version, room_id=other)


def test_v12_create_with_room_id_is_rejected() -> None:
    create = room(ROOM_V12)[0]
    data = received(create)
    data["room_id"] = create.room_id
    with pytest.raises(InvalidPdu, match="no 'room_id'"):
        parse_pdu(data, ROOM_V12)


def test_v12_create_must_be_the_requested_room() -> None:
    with pytest.raises(InvalidPdu, match="not"):
        parse_pdu(received(room(ROOM_V12)[0]), ROOM_V12, room_id=a_hash_id("!"))


@pytest.mark.parametrize("state_key", [None, "a"])
def test_v12_create_that_is_not_the_create_event_needs_a_room_id(state_key: str | None) -> None:
    data = received(room(ROOM_V12)[0])
    if state_key is None:
        del data["state_key"]
    else:
        data["state_key"] = state_key
    with pytest.raises(InvalidPdu, match="room_id"):
        parse_pdu(data, ROOM_V12)


@pytest.mark.parametrize(
    "room_id",
    [
        "!room:x",
        "!short",
        "!" + "a" * 44,
        "room",
        "",
        a_hash_id("$"),
        a_hash_id("!")[:-1] + "B",  # not a canonical encoding of 32 bytes
        a_hash_id("!")[:-1] + "+",
        a_hash_id("!") + ":x",
    ],
)
def test_v12_malformed_room_id_is_rejected(room_id: str) -> None:
    data = message_data(ROOM_V12)
    data["room_id"] = room_id
    with pytest.raises(InvalidPdu, match="room_id"):
        parse_pdu(data, ROOM_V12)


@pytest.mark.parametrize("version", [ROOM_V10, ROOM_V11], ids=["10", "11"])
@pytest.mark.parametrize(
    "room_id", ["room:x", "!room", "!room:bad server", "$room:x", "!" + "r" * 254 + ":x", ""]
)
def test_pre_v12_malformed_room_id_is_rejected(version: RoomVersion, room_id: str) -> None:
    data = message_data(version)
    data["room_id"] = room_id
    with pytest.raises(InvalidPdu, match="room_id"):
        parse_pdu(data, version)


# --- step 3: hash check or redact -----------------------------------------------------


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_matching_hash_keeps_the_event(version: RoomVersion) -> None:
    for pdu in room(version):
        parsed = parse_pdu(received(pdu), version)
        checked, ok = check_content_hash_or_redact(parsed)
        assert ok and checked is parsed


@pytest.mark.parametrize("version", ALL, ids=ids)
@pytest.mark.parametrize(
    ("tamper", "same_id"),
    [
        pytest.param(_set("content.body", "tampered"), True, id="content changed"),
        pytest.param(_set("content.extra", 1), True, id="content added"),
        pytest.param(_set("added_key", "x"), True, id="top-level key added"),
        pytest.param(_set("hashes", {"sha256": "not base64!"}), False, id="hash not base64"),
        pytest.param(_set("hashes", {"sha256": ""}), False, id="hash empty"),
    ],
)
def test_hash_mismatch_gives_the_redacted_event(
    version: RoomVersion, tamper: Mutation, same_id: bool
) -> None:
    original = room(version)[2]
    data = received(original)
    tamper(data)
    parsed = parse_pdu(data, version)
    checked, ok = check_content_hash_or_redact(parsed)
    assert not ok
    assert checked.event_id == parsed.event_id
    assert checked.room_version is version
    assert dict(checked.data) == redact(data, version)
    assert checked.content == {}
    assert "added_key" not in checked.data
    # The event ID and the signature cover the redacted form, which includes "hashes".
    assert (checked.event_id == original.event_id) is same_id
    assert (
        verify_event_signature(checked.data, version, ServerName("x"), get_verify_key(KEY))
        is same_id
    )


@pytest.mark.parametrize("version", [ROOM_V11, ROOM_V12], ids=["11", "12"])
def test_redacted_redaction_keeps_redacts_from_v11(version: RoomVersion) -> None:
    _, _, message, redaction = room(version)
    data = received(redaction)
    data["content"]["reason"] = "tampered"
    checked, ok = check_content_hash_or_redact(parse_pdu(data, version))
    assert not ok
    assert checked.content == {"redacts": message.event_id}
    assert checked.redacts == message.event_id


# --- properties -----------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["$e", "@a:x", "!r:x", "m.room.create", "", "\x00"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=16,
)
EVENT_KEYS = [*REQUIRED, "state_key", "unsigned", "redacts", "event_id"]
json_objects = st.dictionaries(st.sampled_from(EVENT_KEYS) | st.text(max_size=6), json_values)


def _outcome(data: object, version: RoomVersion, room_id: str | None) -> object:
    try:
        pdu = parse_pdu(data, version, room_id=room_id)
    except InvalidPdu as exc:
        return ("invalid", str(exc))
    check_content_hash_or_redact(pdu)
    return (pdu.event_id, encode_canonical_json(pdu.data))


@given(
    data=json_objects | json_values,
    version=st.sampled_from(ALL),
    room_id=st.none() | st.sampled_from(["!r:x", a_hash_id("!")]),
)
def test_arbitrary_json_only_raises_invalid_pdu_and_is_deterministic(
    data: object, version: RoomVersion, room_id: str | None
) -> None:
    before = copy.deepcopy(data)
    first = _outcome(data, version, room_id)
    assert _outcome(data, version, room_id) == first
    assert json.dumps(data, sort_keys=True) == json.dumps(before, sort_keys=True)


@given(
    which=st.integers(min_value=0, max_value=3),
    version=st.sampled_from(ALL),
    changes=st.dictionaries(st.sampled_from(EVENT_KEYS), st.none() | json_values, max_size=3),
)
def test_mutated_real_events_only_raise_invalid_pdu(
    which: int, version: RoomVersion, changes: dict[str, Any]
) -> None:
    pdu = room(version)[which]
    data = received(pdu)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    first = _outcome(data, version, pdu.room_id)
    assert _outcome(data, version, pdu.room_id) == first
    if not changes:
        assert first == (pdu.event_id, encode_canonical_json(pdu.data))


clean_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
clean_values = st.recursive(
    st.none() | st.booleans() | st.integers(MIN_INT, MAX_INT) | clean_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(clean_text, children, max_size=4)
    ),
    max_leaves=16,
)


@given(version=st.sampled_from(ALL), content=st.dictionaries(clean_text, clean_values))
def test_any_clean_content_is_accepted(version: RoomVersion, content: JsonDict) -> None:
    data = message_data(version)
    data["content"] = content
    parsed = parse_pdu(data, version)
    assert parsed.content == content
    # m.room.message content is redacted away, so it is not part of the event ID.
    assert parsed.event_id == room(version)[2].event_id
