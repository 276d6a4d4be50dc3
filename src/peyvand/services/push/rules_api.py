"""Push rules per user (Client-Server API, "Push Rules: API").

``PushRulesService`` owns a cache of each user's compiled ``Ruleset`` (read for every local
member of a room whenever unread counts regroup its members; a cold cache is filled in
bulk, a few queries per room, never one per member) and invalidates it next to each
write. The rules themselves, their
validation and their evaluation are in ``events.push_rules``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import replace
from typing import Any, Final

from peyvand.errors import Errcode, MatrixError
from peyvand.events.push_rules.actions import parse_actions
from peyvand.events.push_rules.predefined import default_rules
from peyvand.events.push_rules.rule import (
    CONDITION_KINDS,
    PushRule,
    RuleOverride,
    is_default_rule_id,
)
from peyvand.events.push_rules.ruleset import Ruleset, build_ruleset
from peyvand.events.push_rules.validation import check_kind, parse_rule
from peyvand.lru import LRU
from peyvand.storage.errors import NotFoundError
from peyvand.storage.push_rules import DefaultRuleRow, PushRuleRow, PushRuleStore
from peyvand.types import JsonDict

# Rulesets kept: a default one is about 300 bytes with its cache entry, and a room with
# more local members than this would read every member's rules for every message.
DEFAULT_CACHE_SIZE: Final = 100_000

ChangeListener = Callable[[str], None]


class PushRulesService:
    def __init__(self, store: PushRuleStore, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._store = store
        self._cache: LRU[str, Ruleset] = LRU(cache_size)
        # Bumped by every write: a read that overlapped a write does not fill the cache.
        self._writes = 0
        self._listeners: list[ChangeListener] = []
        self._write_lock = asyncio.Lock()

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(user_id)`` after each change to a user's rules (for /sync's
        ``m.push_rules`` account data, "Push Rules: Events")."""
        self._listeners.append(listener)

    @property
    def version(self) -> int:
        """Bumped by every change to any user's rules: what was derived from rulesets read
        at an older version (a room's members grouped by ruleset) is out of date."""
        return self._writes

    async def get_ruleset(self, user_id: str) -> Ruleset:
        """The user's compiled ruleset, from the cache when possible."""
        return (await self.get_rulesets([user_id]))[user_id]

    async def get_rulesets(self, user_ids: Iterable[str]) -> dict[str, Ruleset]:
        """Each user's compiled ruleset: from the cache, and those not cached read in bulk
        (``PushRuleStore.get_rules_of``: two queries per 500 users, not one per user)."""
        found: dict[str, Ruleset] = {}
        missing: list[str] = []
        for user_id in user_ids:
            cached = self._cache.get(user_id)
            if cached is None:
                missing.append(user_id)
            else:
                found[user_id] = cached
        if not missing:
            return found
        writes = self._writes
        for user_id, (rows, default_rows) in (await self._store.get_rules_of(missing)).items():
            ruleset = found[user_id] = _ruleset(user_id, rows, default_rows)
            if writes == self._writes:
                self._cache.put(user_id, ruleset)
        return found

    async def get_rules_json(self, user_id: str) -> JsonDict:
        """GET /pushrules/: ``{"global": PushRuleset}``; also the ``m.push_rules`` content."""
        return {"global": (await self.get_ruleset(user_id)).to_json()}

    async def get_rule(self, user_id: str, kind: str, rule_id: str) -> PushRule:
        """One rule; M_INVALID_PARAM for an unknown kind, M_NOT_FOUND for no such rule."""
        check_kind(kind)
        rule = (await self.get_ruleset(user_id)).get(kind, rule_id)
        if rule is None:
            raise MatrixError(Errcode.NOT_FOUND, "The push rule was not found.")
        return rule

    async def put_rule(
        self,
        user_id: str,
        kind: str,
        rule_id: str,
        body: Mapping[str, Any],
        *,
        before: str | None = None,
        after: str | None = None,
    ) -> None:
        """PUT /pushrules/global/{kind}/{ruleId}: create or update a user-defined rule."""
        rule = parse_rule(kind, rule_id, body)
        for anchor in (before, after):
            if anchor is not None and is_default_rule_id(anchor):
                raise MatrixError(
                    Errcode.INVALID_PARAM, "A rule cannot be placed relative to a default rule"
                )
        try:
            # Placing a rule reads then rewrites its kind's order: one writer at a time.
            async with self._write_lock:
                await self._store.put_rule(
                    user_id,
                    kind,
                    rule_id,
                    conditions=list(rule.conditions),
                    pattern=rule.pattern,
                    actions=list(rule.actions),
                    before=before,
                    after=after,
                )
        except NotFoundError as exc:
            # The spec's example answer for an unknown before/after rule.
            raise MatrixError(Errcode.UNKNOWN, str(exc)) from exc
        self._changed(user_id)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> None:
        """DELETE /pushrules/global/{kind}/{ruleId}: server-default rules cannot be deleted."""
        check_kind(kind)
        if _is_known_default(user_id, kind, rule_id):
            raise MatrixError(Errcode.INVALID_PARAM, "Server-default rules cannot be deleted")
        if not await self._store.delete_rule(user_id, kind, rule_id):
            raise MatrixError(Errcode.NOT_FOUND, "The push rule was not found.")
        self._changed(user_id)

    async def set_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> None:
        """PUT .../{ruleId}/enabled, for user-defined and server-default rules."""
        check_kind(kind)
        if _is_known_default(user_id, kind, rule_id):
            await self._store.set_default_enabled(user_id, kind, rule_id, enabled)
        elif not await self._store.set_enabled(user_id, kind, rule_id, enabled):
            raise MatrixError(Errcode.NOT_FOUND, "The push rule was not found.")
        self._changed(user_id)

    async def set_actions(self, user_id: str, kind: str, rule_id: str, actions: Any) -> None:
        """PUT .../{ruleId}/actions: "can be used to change the actions of builtin rules"."""
        check_kind(kind)
        parsed = list(parse_actions(actions))
        if _is_known_default(user_id, kind, rule_id):
            await self._store.set_default_actions(user_id, kind, rule_id, parsed)
        elif not await self._store.set_actions(user_id, kind, rule_id, parsed):
            raise MatrixError(Errcode.NOT_FOUND, "The push rule was not found.")
        self._changed(user_id)

    async def copy_room_rules(self, user_id: str, old_room_id: str, new_room_id: str) -> None:
        """Give ``new_room_id`` the user's enabled rules about ``old_room_id`` (Client-Server
        API, "Room Upgrades": the server should transfer the user's notification settings).

        As Synapse does: a room rule named by the old room gets a twin named by the new
        one; an override or underride rule with a ``room_id`` condition on the old room
        gets a copy with that condition on the new room, named by the new room's ID.
        """
        copies: list[PushRule] = []
        for rule in (await self.get_ruleset(user_id)).rules:
            if rule.default or not rule.enabled:
                continue
            if rule.kind == "room" and rule.rule_id == old_room_id:
                copies.append(replace(rule, rule_id=new_room_id))
            elif rule.kind in CONDITION_KINDS and any(
                _is_room_condition(c, old_room_id) for c in rule.conditions
            ):
                conditions = tuple(
                    {**c, "pattern": new_room_id} if _is_room_condition(c, old_room_id) else c
                    for c in rule.conditions
                )
                copies.append(replace(rule, rule_id=new_room_id, conditions=conditions))
        if not copies:
            return
        async with self._write_lock:
            for rule in copies:
                await self._store.put_rule(
                    user_id,
                    rule.kind,
                    rule.rule_id,
                    conditions=list(rule.conditions),
                    pattern=rule.pattern,
                    actions=list(rule.actions),
                )
        self._changed(user_id)

    def changed_elsewhere(self, user_ids: Collection[str] | None) -> None:
        """Another process of a deployment changed these users' rules (None: anyone's):
        what is kept of them here is dropped, without telling the listeners (the other
        process did: issue 21)."""
        self._writes += 1
        if user_ids is None:
            self._cache.clear()
            return
        for user_id in user_ids:
            self._cache.pop(user_id)

    def _changed(self, user_id: str) -> None:
        """Invalidate next to the write (after it committed), then tell listeners."""
        self._writes += 1
        self._cache.pop(user_id)
        for listener in self._listeners:
            listener(user_id)


def _ruleset(
    user_id: str, rows: Iterable[PushRuleRow], default_rows: Iterable[DefaultRuleRow]
) -> Ruleset:
    """The ruleset of ``user_id`` from their stored rules and changes to default rules."""
    return build_ruleset(
        user_id,
        (
            PushRule(
                row.kind,
                row.rule_id,
                tuple(row.actions),
                tuple(row.conditions),
                row.pattern,
                row.enabled,
            )
            for row in rows
        ),
        {
            (row.kind, row.rule_id): RuleOverride(
                row.enabled, None if row.actions is None else tuple(row.actions)
            )
            for row in default_rows
        },
    )


def _is_room_condition(condition: Mapping[str, Any], room_id: str) -> bool:
    return (
        condition.get("kind") == "event_match"
        and condition.get("key") == "room_id"
        and condition.get("pattern") == room_id
    )


def _is_known_default(user_id: str, kind: str, rule_id: str) -> bool:
    """True for a server-default rule, False for a user rule ID, M_NOT_FOUND for a dotted
    ID that names no default rule of this kind."""
    if not is_default_rule_id(rule_id):
        return False
    if any(r.kind == kind and r.rule_id == rule_id for r in default_rules(user_id)):
        return True
    raise MatrixError(Errcode.NOT_FOUND, "The push rule was not found.")
