"""Moderation policy rules (Client-Server API, "Moderation policy lists"), as pure data.

A policy list is a room whose ``m.policy.rule.{user,room,server}`` state events each name
an ``entity`` (a glob: ``*`` any run of characters, ``?`` exactly one; Appendices,
"Glob-style matching"), a ``recommendation`` and a ``reason``. Only ``m.ban`` is
specified, and only ``m.ban`` rules are kept: others, and events whose content is not a
valid rule (a redacted or "removed" rule has none), are ignored. The event types of
spec v1.0 (``m.room.rule.*``) and of Mjolnir (``org.matrix.mjolnir.rule.*``) count as
their ``m.policy.rule.*`` equivalents, as Mjolnir and Synapse still read them.

``PolicyMatcher`` answers "which ban rule, if any, matches this user, server or room";
matching is case-insensitive, and server rules match the server name without its port
(as server ACLs do: a port cannot be used to slip past a ban), or with it when the
entity names a port. Exact entities are compared casefolded; globs case-insensitively as
``events.glob`` does (``re``'s one-character folding), and a glob longer than 255
characters matches nothing (no valid identifier is longer).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from peyvand.events.glob import Glob, compile_glob
from peyvand.events.server_acl import server_host
from peyvand.types import ServerName

RuleKind = Literal["user", "room", "server"]

BAN: Final = "m.ban"
RULE_TYPES: Final[Mapping[str, RuleKind]] = {
    f"{prefix}.{kind}": kind
    for prefix in ("m.policy.rule", "m.room.rule", "org.matrix.mjolnir.rule")
    for kind in ("user", "room", "server")
}


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One ``m.ban`` rule of a policy room."""

    kind: RuleKind
    entity: str
    reason: str
    room_id: str
    event_type: str
    state_key: str


def parse_rule(
    room_id: str, event_type: str, state_key: str, content: Mapping[str, Any]
) -> PolicyRule | None:
    """The ban rule a policy state event holds; None for anything else (other event
    types, other recommendations, missing or mistyped fields, an empty entity)."""
    kind = RULE_TYPES.get(event_type)
    if kind is None:
        return None
    entity = content.get("entity")
    recommendation = content.get("recommendation")
    reason = content.get("reason", "")
    if not isinstance(entity, str) or not entity or recommendation != BAN:
        return None
    return PolicyRule(
        kind=kind,
        entity=entity,
        reason=reason if isinstance(reason, str) else "",
        room_id=room_id,
        event_type=event_type,
        state_key=state_key,
    )


@dataclass(frozen=True, slots=True)
class _Globs:
    """Rules of one kind: exact entities in a dict (one lookup whatever their number),
    globs matched one after another, each in time linear in practice and never worse
    than O(len(candidate) x len(glob)) (``events.glob``: no backtracking regex, since
    both the globs and the identifiers come from other parties)."""

    exact: Mapping[str, PolicyRule]
    globs: tuple[tuple[Glob, PolicyRule], ...]

    @classmethod
    def of(cls, rules: Iterable[PolicyRule]) -> _Globs:
        exact: dict[str, PolicyRule] = {}
        globs: list[tuple[Glob, PolicyRule]] = []
        for rule in rules:
            if "*" in rule.entity or "?" in rule.entity:
                globs.append((compile_glob(rule.entity), rule))
            else:
                exact.setdefault(rule.entity.casefold(), rule)
        return cls(exact, tuple(globs))

    def match(self, candidate: str) -> PolicyRule | None:
        rule = self.exact.get(candidate.casefold())
        if rule is not None:
            return rule
        return next((r for g, r in self.globs if g.matches(candidate)), None)


@dataclass(frozen=True, slots=True)
class PolicyMatcher:
    """The ban rules of every followed policy list, compiled; immutable (rebuilt, not
    changed, when a list changes)."""

    rules: tuple[PolicyRule, ...] = ()
    _users: _Globs = field(init=False, repr=False)
    _rooms: _Globs = field(init=False, repr=False)
    _servers: _Globs = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for kind in ("user", "room", "server"):
            object.__setattr__(
                self, f"_{kind}s", _Globs.of(r for r in self.rules if r.kind == kind)
            )

    def user(self, user_id: str) -> PolicyRule | None:
        """The ``m.policy.rule.user`` ban matching ``user_id``."""
        return self._users.match(user_id)

    def server(self, server_name: ServerName) -> PolicyRule | None:
        """The ``m.policy.rule.server`` ban matching ``server_name`` (port ignored)."""
        host = server_host(server_name)
        return self._servers.match(host) or (
            self._servers.match(server_name) if host != server_name else None
        )

    def room(self, identifiers: Iterable[str]) -> PolicyRule | None:
        """The ``m.policy.rule.room`` ban matching any of a room's identifiers (its ID,
        its aliases)."""
        return next((r for i in identifiers if (r := self._rooms.match(i)) is not None), None)
