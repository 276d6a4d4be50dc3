"""``events.server_acl.server_allowed`` against the rules of ``m.room.server_acl``."""

from __future__ import annotations

import pytest

from peyvand.events.server_acl import server_allowed
from peyvand.types import ServerName

ACL = {"allow": ["*"], "deny": ["evil.example", "*.bad.example"], "allow_ip_literals": False}


@pytest.mark.parametrize(
    ("server", "allowed"),
    [
        ("good.example", True),
        ("good.example:8448", True),  # ports are ignored
        ("evil.example", False),
        ("EVIL.example:443", False),  # case-insensitive
        ("a.bad.example", False),
        ("bad.example", True),  # "*.bad.example" needs a subdomain
        ("127.0.0.1:8448", False),  # IP literals denied here
        ("[::1]:8448", False),
    ],
)
def test_allow_deny_and_ip_literals(server: ServerName, allowed: bool) -> None:
    assert server_allowed(ACL, server) is allowed


def test_no_allow_list_denies_everyone() -> None:
    assert not server_allowed({"deny": []}, ServerName("good.example"))


def test_ip_literals_allowed_by_default_and_question_mark_globs() -> None:
    acl = {"allow": ["127.0.0.?", "server?.example"]}
    assert server_allowed(acl, ServerName("127.0.0.1:9000"))
    assert server_allowed(acl, ServerName("server1.example"))
    assert not server_allowed(acl, ServerName("server12.example"))


def test_malformed_content_is_safe() -> None:
    acl = {"allow": "*", "deny": [1, None], "allow_ip_literals": "no"}
    assert not server_allowed(acl, ServerName("good.example"))  # allow is not a list: nobody
    assert server_allowed({"allow": ["*"], "allow_ip_literals": "no"}, ServerName("10.0.0.1"))
