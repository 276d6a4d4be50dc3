"""The limits of ``events.json_input``: what is accepted can be encoded back, with room
to spare for the levels a response wraps around it."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from peyvand.events.canonical_json import MAX_DEPTH
from peyvand.events.json_input import (
    MAX_FEDERATION_DEPTH,
    NotJson,
    UnacceptableJson,
    check_json_value,
    parse_client_json,
    parse_federation_json,
)

# Levels a response may add around stored client JSON (a room's account data in /sync:
# rooms.join.<room>.account_data.events[i].content) and then some.
RESPONSE_WRAPPING = 16

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=40,
)


def nested_bytes(depth: int, open_: bytes = b'{"k":', close: bytes = b"}") -> bytes:
    return open_ * depth + b"1" + close * depth


def wrapped(value: Any, levels: int) -> Any:
    for _ in range(levels):
        value = {"w": [value]}
    return value


@given(json_values)
def test_accepted_client_json_encodes_back_wrapped(value: Any) -> None:
    raw = json.dumps(value).encode()
    try:
        parsed = parse_client_json(raw)
    except (NotJson, UnacceptableJson):
        return
    orjson.dumps(wrapped(parsed, RESPONSE_WRAPPING // 2))


@given(json_values)
def test_checked_federation_json_encodes_back_wrapped(value: Any) -> None:
    raw = json.dumps(value).encode()
    try:
        parsed = parse_federation_json(raw, exact_ints=True)
        check_json_value(parsed)
    except (NotJson, UnacceptableJson):
        return
    orjson.dumps(wrapped(parsed, RESPONSE_WRAPPING // 2))


@pytest.mark.parametrize(("open_", "close"), [(b'{"k":', b"}"), (b"[", b"]")])
def test_client_depth_limit(open_: bytes, close: bytes) -> None:
    assert parse_client_json(nested_bytes(MAX_DEPTH, open_, close))
    for depth in (MAX_DEPTH + 1, 254, 255, 1000, 5000):
        with pytest.raises((UnacceptableJson, NotJson)):
            parse_client_json(nested_bytes(depth, open_, close))


def test_federation_depth_limit() -> None:
    parse_federation_json(nested_bytes(MAX_FEDERATION_DEPTH), exact_ints=True)
    with pytest.raises(UnacceptableJson):
        parse_federation_json(nested_bytes(MAX_FEDERATION_DEPTH + 1), exact_ints=True)
    with pytest.raises(NotJson):
        parse_federation_json(nested_bytes(100_000), exact_ints=True)
    assert MAX_FEDERATION_DEPTH + RESPONSE_WRAPPING < 255


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": "\\u0000"}',
        b'{"\\u0000": 1}',
        b'{"a": ["x", {"b": "y\\u0000z"}]}',
    ],
)
def test_nul_is_refused_in_client_json(raw: bytes) -> None:
    with pytest.raises(UnacceptableJson):
        parse_client_json(raw)


def test_escaped_backslash_before_u0000_is_text() -> None:
    assert parse_client_json(b'{"a": "\\\\u0000"}') == {"a": "\\u0000"}


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1, 10**30])
def test_federation_integers_beyond_the_encoder(number: int) -> None:
    parsed = parse_federation_json(b'{"n": %d}' % number, exact_ints=True)
    assert parsed == {"n": number}  # exact, as signed
    with pytest.raises(UnacceptableJson):
        check_json_value(parsed)


def test_lone_surrogates() -> None:
    with pytest.raises(NotJson):
        parse_client_json(b'{"a": "\\ud800"}')
    parsed = parse_federation_json(b'{"a": "\\ud800"}', exact_ints=True)
    with pytest.raises(UnacceptableJson):
        check_json_value(parsed)
    assert parse_client_json(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}


def test_empty_bodies() -> None:
    assert parse_client_json(b"  ") == {}
    assert parse_federation_json(b"", exact_ints=True) is None
