"""Identifier grammars of ``peyvand.types`` (Appendices, "Identifier Grammar")."""

from __future__ import annotations

import pytest

from peyvand.types import is_valid_localpart, is_valid_server_name, is_valid_user_id


@pytest.mark.parametrize("bad", ["alice\n", "alice\r", "al\tice", "alice ", "\nalice", "al\x00ice"])
def test_control_characters_are_never_part_of_an_identifier(bad: str) -> None:
    assert not is_valid_localpart(bad)
    assert not is_valid_user_id(f"@{bad}:example.org")


@pytest.mark.parametrize("end", ["\n", "\r\n", " ", "\x00"])
def test_server_names_end_where_they_end(end: str) -> None:
    assert not is_valid_server_name(f"example.org{end}")
    assert not is_valid_user_id(f"@alice:example.org{end}")


def test_valid_identifiers() -> None:
    assert is_valid_localpart("chrtestuser-10-")
    assert is_valid_user_id("@alice:example.org")
    assert is_valid_server_name("example.org:8448")
