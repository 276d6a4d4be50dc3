"""PushRuleStore contract and PushRulesService on it: the same behaviour on SQLite and
PostgreSQL (Client-Server API, "Push Rules: API")."""

from __future__ import annotations

import pytest

from peyvand.errors import Errcode, MatrixError
from peyvand.services.push.rules_api import PushRulesService
from peyvand.storage.database import Database
from peyvand.storage.errors import NotFoundError
from peyvand.storage.push_rules import DefaultRuleRow, PushRuleStore

ALICE = "@alice:localhost"
BOB = "@bob:localhost"


@pytest.fixture
def store(database: Database) -> PushRuleStore:
    return PushRuleStore(database)


async def put(store: PushRuleStore, rule_id: str, **where: str) -> None:
    await store.put_rule(
        ALICE, "content", rule_id, conditions=[], pattern=rule_id, actions=["notify"], **where
    )


async def order(store: PushRuleStore, kind: str = "content") -> list[str]:
    rows, _ = await store.get_rules(ALICE)
    return [row.rule_id for row in rows if row.kind == kind]


async def test_new_rules_go_first_and_updates_keep_their_place(store: PushRuleStore) -> None:
    for rule_id in ("a", "b", "c"):
        await put(store, rule_id)
    assert await order(store) == ["c", "b", "a"]
    await store.put_rule(ALICE, "content", "b", conditions=[], pattern="new", actions=[])
    assert await order(store) == ["c", "b", "a"]
    rows, _ = await store.get_rules(ALICE)
    b = next(row for row in rows if row.rule_id == "b")
    assert (b.pattern, b.actions, b.enabled) == ("new", [], True)


async def test_before_and_after(store: PushRuleStore) -> None:
    for rule_id in ("a", "b", "c"):
        await put(store, rule_id)
    await put(store, "d", after="c")
    assert await order(store) == ["c", "d", "b", "a"]
    await put(store, "e", before="a")
    assert await order(store) == ["c", "d", "b", "e", "a"]
    # Moving an existing rule; before wins over after.
    await put(store, "a", before="c", after="b")
    assert await order(store) == ["a", "c", "d", "b", "e"]
    with pytest.raises(NotFoundError):
        await put(store, "x", before="missing")
    with pytest.raises(NotFoundError):
        await put(store, "a", after="a")
    assert await order(store) == ["a", "c", "d", "b", "e"]


async def test_kinds_and_users_are_separate(store: PushRuleStore) -> None:
    await put(store, "a")
    await store.put_rule(
        ALICE, "override", "a", conditions=[{"kind": "x"}], pattern=None, actions=[]
    )
    await store.put_rule(BOB, "content", "a", conditions=[], pattern="p", actions=[])
    assert await order(store, "override") == ["a"]
    assert await store.delete_rule(ALICE, "content", "a")
    assert not await store.delete_rule(ALICE, "content", "a")
    assert await order(store, "override") == ["a"]
    rows, _ = await store.get_rules(BOB)
    assert [(r.kind, r.rule_id) for r in rows] == [("content", "a")]


async def test_enabled_actions_and_default_changes(store: PushRuleStore) -> None:
    await put(store, "a")
    assert await store.set_enabled(ALICE, "content", "a", False)
    assert await store.set_actions(ALICE, "content", "a", [{"set_tweak": "highlight"}])
    assert not await store.set_enabled(ALICE, "content", "missing", False)
    assert not await store.set_actions(ALICE, "content", "missing", [])
    await store.set_default_enabled(ALICE, "override", ".m.rule.master", True)
    await store.set_default_actions(ALICE, "underride", ".m.rule.message", [])
    await store.set_default_enabled(ALICE, "underride", ".m.rule.message", False)
    rows, defaults = await store.get_rules(ALICE)
    assert (rows[0].enabled, rows[0].actions) == (False, [{"set_tweak": "highlight"}])
    assert sorted(defaults, key=lambda d: d.rule_id) == [
        DefaultRuleRow("override", ".m.rule.master", True, None),
        DefaultRuleRow("underride", ".m.rule.message", False, []),
    ]


# PushRulesService --------------------------------------------------------------------


async def test_service_caches_and_invalidates_on_write(store: PushRuleStore) -> None:
    service = PushRulesService(store)
    changed: list[str] = []
    service.add_listener(changed.append)
    first = await service.get_ruleset(ALICE)
    assert await service.get_ruleset(ALICE) is first
    await service.put_rule(ALICE, "content", "tea", {"pattern": "tea", "actions": ["notify"]})
    second = await service.get_ruleset(ALICE)
    assert second is not first and second.get("content", "tea") is not None
    await service.set_enabled(ALICE, "override", ".m.rule.master", True)
    await service.set_actions(ALICE, "underride", ".m.rule.message", ["notify", "coalesce"])
    await service.set_enabled(ALICE, "content", "tea", False)
    master = await service.get_rule(ALICE, "override", ".m.rule.master")
    assert master.enabled and master.default
    message = await service.get_rule(ALICE, "underride", ".m.rule.message")
    assert message.actions == ("notify", "coalesce")
    assert not (await service.get_rule(ALICE, "content", "tea")).enabled
    await service.delete_rule(ALICE, "content", "tea")
    assert changed == [ALICE] * 5
    rules = await service.get_rules_json(ALICE)
    assert rules["global"]["content"] == []


async def test_service_errors(store: PushRuleStore) -> None:
    service = PushRulesService(store)

    async def errcode(coro: object) -> Errcode:
        with pytest.raises(MatrixError) as info:
            await coro  # type: ignore[misc]
        return info.value.errcode

    assert await errcode(service.get_rule(ALICE, "bogus", "x")) == Errcode.INVALID_PARAM
    assert await errcode(service.get_rule(ALICE, "content", "x")) == Errcode.NOT_FOUND
    assert await errcode(service.delete_rule(ALICE, "content", "x")) == Errcode.NOT_FOUND
    assert (
        await errcode(service.delete_rule(ALICE, "override", ".m.rule.master"))
        == Errcode.INVALID_PARAM
    )
    assert (
        await errcode(service.set_enabled(ALICE, "content", ".m.rule.master", True))
        == Errcode.NOT_FOUND
    )
    assert await errcode(service.set_actions(ALICE, "content", "x", [])) == Errcode.NOT_FOUND
    body = {"pattern": "x", "actions": []}
    assert (
        await errcode(service.put_rule(ALICE, "content", "x", body, before="nope"))
        == Errcode.UNKNOWN
    )
    assert (
        await errcode(
            service.put_rule(ALICE, "content", "x", body, after=".m.rule.contains_user_name")
        )
        == Errcode.INVALID_PARAM
    )
    assert await errcode(service.put_rule(ALICE, "content", ".x", body)) == Errcode.INVALID_PARAM
