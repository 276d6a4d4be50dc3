"""Canonical JSON: Appendices, "Canonical JSON" examples; value rules of rooms v6+."""

from __future__ import annotations

import json
import math
from typing import Any

import canonicaljson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from peyvand.events.canonical_json import (
    MAX_DEPTH,
    MAX_INT,
    MIN_INT,
    check_canonical_json_values,
    encode_canonical_json,
)

# (input as written in the spec, expected canonical output), Appendices "Examples".
SPEC_EXAMPLES = [
    ("{}", "{}"),
    ('{"one": 1, "two": "Two"}', '{"one":1,"two":"Two"}'),
    ('{"b": "2", "a": "1"}', '{"a":"1","b":"2"}'),
    ('{"b":"2","a":"1"}', '{"a":"1","b":"2"}'),
    (
        """{"auth": {"success": true, "mxid": "@john.doe:example.com", "profile": {
        "display_name": "John Doe", "three_pids": [
        {"medium": "email", "address": "john.doe@example.org"},
        {"medium": "msisdn", "address": "123456789"}]}}}""",
        '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe",'
        '"three_pids":[{"address":"john.doe@example.org","medium":"email"},'
        '{"address":"123456789","medium":"msisdn"}]},"success":true}}',
    ),
    ('{"a": "日本語"}', '{"a":"日本語"}'),
    ('{"本": 2, "日": 1}', '{"日":1,"本":2}'),
    ('{"a": "\\u65E5"}', '{"a":"日"}'),
    ('{"a": null}', '{"a":null}'),
]


@pytest.mark.parametrize(("source", "expected"), SPEC_EXAMPLES)
def test_spec_examples(source: str, expected: str) -> None:
    assert encode_canonical_json(json.loads(source)) == expected.encode()


def test_spec_example_with_negative_zero_and_exponent() -> None:
    # The spec's last example ({"a": -0, "b": 1e10}) once parsed as integers.
    assert encode_canonical_json({"a": -0, "b": 10**10}) == b'{"a":0,"b":10000000000}'


def test_control_characters_use_the_grammar_escapes() -> None:
    assert encode_canonical_json('\x00\x08\t\n\x0c\r\x1f"\\') == (
        b'"\\u0000\\b\\t\\n\\f\\r\\u001f\\"\\\\"'
    )


def test_encode_refuses_nan_and_lone_surrogates() -> None:
    with pytest.raises(ValueError):
        encode_canonical_json({"a": math.nan})
    with pytest.raises(ValueError):
        encode_canonical_json({"a": "\ud800"})


canonical_ints = st.integers(MIN_INT, MAX_INT)
json_leaves = st.none() | st.booleans() | canonical_ints | st.text()
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=25,
)


@given(json_values)
def test_encoding_matches_canonicaljson_byte_for_byte(value: Any) -> None:
    assert encode_canonical_json(value) == canonicaljson.encode_canonical_json(value)


@given(json_values)
def test_encoding_is_the_spec_reference_encoding(value: Any) -> None:
    reference = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    assert encode_canonical_json(value) == reference.encode("utf-8")
    assert json.loads(encode_canonical_json(value)) == value


@given(json_values)
def test_allowed_values_are_accepted(value: Any) -> None:
    check_canonical_json_values(value)


invalid_leaves = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=MAX_INT + 1)
    | st.integers(max_value=MIN_INT - 1)
    | st.text(min_size=1).map(lambda s: s + "\ud800")
    | st.tuples(json_leaves)
    | st.binary()
    | st.just({1: "non-string key"})
)


@st.composite
def poisoned_values(draw: st.DrawFn) -> Any:
    """A JSON value with exactly one disallowed value buried somewhere inside."""
    value: Any = draw(invalid_leaves)
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            siblings: list[Any] = draw(st.lists(json_values, max_size=3))
            siblings.insert(draw(st.integers(0, len(siblings))), value)
            value = siblings
        else:
            mapping: dict[str, Any] = draw(
                st.dictionaries(st.text(max_size=4), json_values, max_size=3)
            )
            mapping[draw(st.text(max_size=4))] = value
            value = mapping
    return value


@given(poisoned_values())
def test_any_disallowed_value_is_refused(value: Any) -> None:
    with pytest.raises(ValueError):
        check_canonical_json_values(value)


@given(st.text().map(lambda s: {s + "\udfff": 1}))
def test_keys_must_be_valid_unicode(value: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="not valid Unicode"):
        check_canonical_json_values(value)


@pytest.mark.parametrize("value", [MAX_INT, MIN_INT, 0, True, False, None, "", [], {}])
def test_boundary_values_are_accepted(value: object) -> None:
    check_canonical_json_values(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (MAX_INT + 1, "integer out of canonical JSON range"),
        (MIN_INT - 1, "integer out of canonical JSON range"),
        (1.0, "floats are not allowed"),
        (-0.0, "floats are not allowed"),
    ],
)
def test_boundary_values_are_refused(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_canonical_json_values({"a": [value]})


def test_error_names_the_offending_path() -> None:
    with pytest.raises(ValueError, match=r"at content\.info\[1\]"):
        check_canonical_json_values({"content": {"info": [1, 2.5]}})


def nested(depth: int) -> object:
    value: object = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def test_nesting_limit() -> None:
    check_canonical_json_values(nested(MAX_DEPTH))
    with pytest.raises(ValueError, match="nested too deeply"):
        check_canonical_json_values(nested(MAX_DEPTH + 1))
    check_canonical_json_values(nested(3), max_depth=3)
    with pytest.raises(ValueError, match="nested too deeply"):
        check_canonical_json_values(nested(4), max_depth=3)


def test_very_deep_nesting_is_refused_without_recursion_error() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        check_canonical_json_values(nested(100_000))
