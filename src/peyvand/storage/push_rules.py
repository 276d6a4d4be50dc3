"""Push rules storage: each user's own rules, ordered within their kind, and the user's
changes (enabled flag, actions) to server-default rules. Schema: 003_push_rules.sql.

Rules are stored as the JSON the service validated; this module does not interpret them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from peyvand.storage.database import Database, Row, placeholders
from peyvand.storage.errors import NotFoundError

# Users per bulk read: well within every backend's parameter limit.
_USER_CHUNK: Final = 500


@dataclass(frozen=True, slots=True)
class PushRuleRow:
    kind: str
    rule_id: str
    conditions: list[Any]
    pattern: str | None
    actions: list[Any]
    enabled: bool


@dataclass(frozen=True, slots=True)
class DefaultRuleRow:
    """A change to a server-default rule; None keeps the default."""

    kind: str
    rule_id: str
    enabled: bool | None
    actions: list[Any] | None


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _rule(row: Row) -> PushRuleRow:
    return PushRuleRow(
        row["kind"],
        row["rule_id"],
        orjson.loads(row["conditions"]),
        row["pattern"],
        orjson.loads(row["actions"]),
        bool(row["enabled"]),
    )


def _default(row: Row) -> DefaultRuleRow:
    return DefaultRuleRow(
        row["kind"],
        row["rule_id"],
        None if row["enabled"] is None else bool(row["enabled"]),
        None if row["actions"] is None else orjson.loads(row["actions"]),
    )


class PushRuleStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_rules(self, user_id: str) -> tuple[list[PushRuleRow], list[DefaultRuleRow]]:
        """The user's rules (each kind in order) and their changes to default rules."""
        rows = await self._db.fetch(
            "SELECT kind, rule_id, conditions, pattern, actions, enabled FROM push_rules "
            "WHERE user_id = $1 ORDER BY kind, position, rule_id",
            user_id,
        )
        defaults = await self._db.fetch(
            "SELECT kind, rule_id, enabled, actions FROM push_rule_defaults WHERE user_id = $1",
            user_id,
        )
        return [_rule(row) for row in rows], [_default(row) for row in defaults]

    async def get_rules_of(
        self, user_ids: Sequence[str]
    ) -> dict[str, tuple[list[PushRuleRow], list[DefaultRuleRow]]]:
        """``get_rules`` for many users: two statements per 500 users, never one per user
        (a room's members on a cold cache). Every user asked for is in the answer."""
        found: dict[str, tuple[list[PushRuleRow], list[DefaultRuleRow]]] = {
            user_id: ([], []) for user_id in user_ids
        }
        users = list(found)
        for start in range(0, len(users), _USER_CHUNK):
            chunk = users[start : start + _USER_CHUNK]
            where = f"user_id IN ({placeholders(len(chunk))})"
            rows = await self._db.fetch(
                "SELECT user_id, kind, rule_id, conditions, pattern, actions, enabled"
                f" FROM push_rules WHERE {where} ORDER BY user_id, kind, position, rule_id",
                *chunk,
            )
            for row in rows:
                found[row["user_id"]][0].append(_rule(row))
            defaults = await self._db.fetch(
                f"SELECT user_id, kind, rule_id, enabled, actions FROM push_rule_defaults"
                f" WHERE {where}",
                *chunk,
            )
            for row in defaults:
                found[row["user_id"]][1].append(_default(row))
        return found

    async def put_rule(
        self,
        user_id: str,
        kind: str,
        rule_id: str,
        *,
        conditions: list[Any],
        pattern: str | None,
        actions: list[Any],
        before: str | None = None,
        after: str | None = None,
    ) -> None:
        """Create or update a rule. A new rule without ``before``/``after`` becomes the
        first of its kind; an updated one keeps its place. ``before`` (which wins over
        ``after``) and ``after`` name another rule of the same kind to place it next to;
        NotFoundError if that rule does not exist."""
        async with self._db.transaction() as conn:
            rows = await conn.fetch(
                "SELECT rule_id, position FROM push_rules WHERE user_id = $1 AND kind = $2 "
                "ORDER BY position, rule_id",
                user_id,
                kind,
            )
            positions: dict[str, int] = {row["rule_id"]: row["position"] for row in rows}
            anchor = before if before is not None else after
            if anchor is not None:
                if anchor == rule_id or anchor not in positions:
                    raise NotFoundError(f"before/after rule not found: {anchor}")
                order = [other for other in positions if other != rule_id]
                order.insert(order.index(anchor) + (0 if before is not None else 1), rule_id)
                await conn.executemany(
                    "UPDATE push_rules SET position = $1 WHERE user_id = $2 AND kind = $3 "
                    "AND rule_id = $4",
                    [(i, user_id, kind, other) for i, other in enumerate(order)],
                )
                position = order.index(rule_id)
            elif rule_id in positions:
                position = positions[rule_id]
            else:
                position = min(positions.values(), default=1) - 1
            await conn.execute(
                "INSERT INTO push_rules "
                "(user_id, kind, rule_id, position, conditions, pattern, actions, enabled) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE) "
                "ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET "
                "position = EXCLUDED.position, conditions = EXCLUDED.conditions, "
                "pattern = EXCLUDED.pattern, actions = EXCLUDED.actions",
                user_id,
                kind,
                rule_id,
                position,
                _dumps(conditions),
                pattern,
                _dumps(actions),
            )

    async def _write_returning(self, sql: str, *args: Any) -> bool:
        """Run a write with ``RETURNING``; True if it touched a row. (Plain ``fetch`` may
        go to a read-only connection.)"""
        async with self._db.transaction() as conn:
            return bool(await conn.fetch(sql, *args))

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> bool:
        """Delete a user rule; False if there was none."""
        return await self._write_returning(
            "DELETE FROM push_rules WHERE user_id = $1 AND kind = $2 AND rule_id = $3 "
            "RETURNING rule_id",
            user_id,
            kind,
            rule_id,
        )

    async def set_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> bool:
        """Enable or disable a user rule; False if there is none."""
        return await self._write_returning(
            "UPDATE push_rules SET enabled = $4 WHERE user_id = $1 AND kind = $2 "
            "AND rule_id = $3 RETURNING rule_id",
            user_id,
            kind,
            rule_id,
            enabled,
        )

    async def set_actions(self, user_id: str, kind: str, rule_id: str, actions: list[Any]) -> bool:
        """Replace a user rule's actions; False if there is none."""
        return await self._write_returning(
            "UPDATE push_rules SET actions = $4 WHERE user_id = $1 AND kind = $2 "
            "AND rule_id = $3 RETURNING rule_id",
            user_id,
            kind,
            rule_id,
            _dumps(actions),
        )

    async def set_default_enabled(
        self, user_id: str, kind: str, rule_id: str, enabled: bool
    ) -> None:
        """Record the user's enabled flag for a server-default rule."""
        await self._db.execute(
            "INSERT INTO push_rule_defaults (user_id, kind, rule_id, enabled) "
            "VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET enabled = EXCLUDED.enabled",
            user_id,
            kind,
            rule_id,
            enabled,
        )

    async def set_default_actions(
        self, user_id: str, kind: str, rule_id: str, actions: list[Any]
    ) -> None:
        """Record the user's actions for a server-default rule."""
        await self._db.execute(
            "INSERT INTO push_rule_defaults (user_id, kind, rule_id, actions) "
            "VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET actions = EXCLUDED.actions",
            user_id,
            kind,
            rule_id,
            _dumps(actions),
        )
