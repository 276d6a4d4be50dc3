"""``ServerPolicy``: the operator's allow and deny lists of servers."""

from __future__ import annotations

import pytest

from peyvand.federation.policy import ServerPolicy
from peyvand.types import ServerName


def test_empty_lists_allow_everyone() -> None:
    policy = ServerPolicy((), ())
    assert policy.allows(ServerName("example.org"))
    assert policy.allows(ServerName("[::1]:8448"))


@pytest.mark.parametrize(
    ("pattern", "server_name", "matches"),
    [
        ("example.org", "example.org", True),
        ("example.org", "EXAMPLE.org", True),  # case-insensitive
        ("example.org", "sub.example.org", False),  # the whole name, not a suffix
        ("example.org", "example.org.evil", False),
        ("example.org", "example.org:8448", True),  # no port in the pattern: any port
        ("example.org:8448", "example.org:8448", True),
        ("example.org:8448", "example.org:8449", False),
        ("example.org:8448", "example.org", False),
        ("example.org:*", "example.org:1", True),
        ("*.example.org", "a.b.example.org", True),
        ("*.example.org", "example.org", False),
        ("*.example.org", "a.example.org:443", True),
        ("*example.org", "badexample.org", True),
        ("ex?mple.org", "example.org", True),
        ("ex?mple.org", "exaample.org", False),
        ("*", "anything:1234", True),
        ("[::1]", "[::1]:8448", True),  # brackets are literal, not a character class
        ("[::1]", ":", False),
        ("1.2.3.*", "1.2.3.4", True),
        ("example.org", "example_org", False),
        ("ex.mple.org", "exxmple.org", False),  # '.' is literal
    ],
)
def test_patterns(pattern: str, server_name: ServerName, matches: bool) -> None:
    assert ServerPolicy((), (pattern,)).allows(server_name) is not matches
    assert ServerPolicy((pattern,), ()).allows(server_name) is matches


def test_deny_wins_over_allow() -> None:
    policy = ServerPolicy(("*.example.org", "friend.net"), ("bad.example.org",))
    assert policy.allows(ServerName("good.example.org"))
    assert policy.allows(ServerName("friend.net:8448"))
    assert not policy.allows(ServerName("bad.example.org"))
    assert not policy.allows(ServerName("bad.example.org:8449"))  # a port does not slip past a deny
    assert not policy.allows(ServerName("stranger.net"))


def test_policies_compare_by_their_lists() -> None:
    assert ServerPolicy(("a",), ("b",)) == ServerPolicy(("a",), ("b",))
    assert "_allowed" not in repr(ServerPolicy(("a",), ()))
