"""Server access control lists (Client-Server API, "Server Access Control Lists (ACLs) for
rooms"; the ``m.room.server_acl`` state event), as a pure function."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from peyvand.events.glob import glob_matches
from peyvand.types import ServerName


def server_allowed(acl_content: Mapping[str, Any], server_name: ServerName) -> bool:
    """Whether ``server_name`` may take part in a room whose ACL is ``acl_content``.

    Ports are ignored; IP literals are denied when ``allow_ip_literals`` is false; a
    ``deny`` match wins over an ``allow`` match; no ``allow`` match denies (an ACL without
    ``allow`` denies everyone).
    """
    host = server_host(server_name)
    allow_ip_literals = acl_content.get("allow_ip_literals", True)
    if not isinstance(allow_ip_literals, bool):
        allow_ip_literals = True
    if not allow_ip_literals and _is_ip_literal(host):
        return False
    if any(_matches(pattern, host) for pattern in _patterns(acl_content.get("deny"))):
        return False
    return any(_matches(pattern, host) for pattern in _patterns(acl_content.get("allow")))


def server_host(server_name: ServerName) -> str:
    """``server_name`` without its port (IPv6 literals keep their brackets)."""
    if server_name.startswith("["):
        return server_name[: server_name.find("]") + 1] if "]" in server_name else server_name
    return server_name.rsplit(":", 1)[0] if server_name.count(":") == 1 else server_name


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _patterns(value: Any) -> list[str]:
    return [p for p in value if isinstance(p, str)] if isinstance(value, list) else []


def _matches(pattern: str, host: str) -> bool:
    """Appendices, "Glob-style matching", case-insensitive (see ``events.glob``)."""
    return glob_matches(pattern, host)
