"""Which servers we federate with: the operator's allow and deny lists
(``federation.allowed_servers`` / ``federation.denied_servers``).

Patterns are server names in which ``*`` matches any run of characters (dots and colons
included) and ``?`` exactly one; every other character, ``[`` and ``]`` of IPv6 literals
included, matches itself. Matching is case-insensitive and covers the whole name. A pattern
without a port also matches that host on any port (``evil.example`` denies
``evil.example:8448`` too), so a port cannot be used to slip past a deny list, as with
server ACLs (Client-Server API, "Server Access Control Lists"). Deny wins over allow; an
empty allow list allows every server that is not denied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from peyvand.types import ServerName

# A trailing ":<digits>" (or wildcards standing for them) is a port; "[::1]" ends in "]".
_PORT_SUFFIX: Final = re.compile(r":[0-9*?]+$")


def _compile(pattern: str) -> re.Pattern[str]:
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _host_part(server_name: ServerName) -> str:
    """``server_name`` without its port, if it has one."""
    if server_name.startswith("["):
        end = server_name.find("]")
        return server_name[: end + 1] if end != -1 else server_name
    host, _, _ = server_name.partition(":")
    return host


@dataclass(frozen=True, slots=True)
class _Pattern:
    regex: re.Pattern[str]
    has_port: bool

    def matches(self, server_name: ServerName) -> bool:
        if self.regex.fullmatch(server_name):
            return True
        return not self.has_port and bool(self.regex.fullmatch(_host_part(server_name)))


def _patterns(names: tuple[str, ...]) -> tuple[_Pattern, ...]:
    return tuple(_Pattern(_compile(name), bool(_PORT_SUFFIX.search(name))) for name in names)


@dataclass(frozen=True, slots=True)
class ServerPolicy:
    """The allow and deny lists, compiled once."""

    allowed: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()
    _allowed: tuple[_Pattern, ...] = field(init=False, repr=False, compare=False)
    _denied: tuple[_Pattern, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_allowed", _patterns(self.allowed))
        object.__setattr__(self, "_denied", _patterns(self.denied))

    def allows(self, server_name: ServerName) -> bool:
        """Whether we may talk to (and accept requests from) ``server_name``."""
        if any(pattern.matches(server_name) for pattern in self._denied):
            return False
        return not self._allowed or any(pattern.matches(server_name) for pattern in self._allowed)
