"""The pure rules of server-side key backups: version strings and the better-key order."""

from __future__ import annotations

import itertools

import pytest

from peyvand.services.e2ee.key_backup import is_better, parse_version
from peyvand.storage.key_backup import KeyMetadata


@pytest.mark.parametrize(
    ("text", "number"),
    [("1", 1), ("42", 42), ("9" * 18, int("9" * 18))],
)
def test_versions_parse(text: str, number: int) -> None:
    assert parse_version(text) == number


@pytest.mark.parametrize(
    "text", ["", "0", "01", "-1", "+1", " 1", "1.0", "abc", "\u0661", "9" * 19]
)
def test_strings_that_name_no_version(text: str) -> None:
    assert parse_version(text) is None


def test_better_is_a_strict_order_verified_then_index_then_forwards() -> None:
    keys = [
        KeyMetadata(verified, index, forwarded)
        for verified, index, forwarded in itertools.product((True, False), (0, 1), (0, 1))
    ]
    # ``keys`` is listed best first: each key beats exactly the ones after it.
    for i, new in enumerate(keys):
        for j, old in enumerate(keys):
            assert is_better(new, old) is (i < j), (new, old)
