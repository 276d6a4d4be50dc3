"""PolicyListService with fakes around it: following rooms (retries with backoff, the
policy user created once, rules re-read on change) and what it refuses."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest

from peyvand.config.model import ModerationConfig
from peyvand.errors import Errcode, MatrixError
from peyvand.services.rooms.policy_list_follower import (
    FIRST_RETRY_SECONDS,
    PolicyListFollower,
    PolicyRulesReader,
)
from peyvand.services.rooms.policy_lists import PolicyListService
from peyvand.types import JsonDict, RoomID, ServerName, UserID

SERVER = ServerName("here.example")
LIST = RoomID("!list:there.example")
ROOM = RoomID("!room:here.example")
TIMEOUT = 10


class FakeState:
    """Rooms as state maps of (type, state_key) -> content; redacted event IDs."""

    def __init__(self) -> None:
        self.rooms: dict[str, dict[tuple[str, str], JsonDict]] = {}
        self.redacted: set[str] = set()

    def put(self, room_id: str, event_type: str, state_key: str, content: JsonDict) -> None:
        self.rooms.setdefault(room_id, {})[(event_type, state_key)] = content

    @staticmethod
    def _id(room_id: str, key: tuple[str, str]) -> str:
        return f"${room_id}|{key[0]}|{key[1]}"

    async def get_room(self, room_id: str) -> Any:
        if room_id not in self.rooms:
            return None
        state = {k: self._id(room_id, k) for k in self.rooms[room_id]}
        return SimpleNamespace(room_id=room_id, state=state)

    def _content(self, event_id: str) -> JsonDict:
        room_id, event_type, state_key = event_id[1:].split("|")
        return self.rooms[room_id][(event_type, state_key)]

    async def get_events(self, event_ids: Any) -> dict[str, Any]:
        return {
            e: SimpleNamespace(redacted_by="$r" if e in self.redacted else None) for e in event_ids
        }

    async def get_pdus(self, event_ids: Any) -> dict[str, Any]:
        return {e: SimpleNamespace(content=self._content(e)) for e in event_ids}

    async def get_state_events(self, state: dict[Any, str], keys: Any) -> dict[Any, Any]:
        return {k: SimpleNamespace(content=self._content(state[k])) for k in keys if k in state}


class FakeAccounts:
    def __init__(self) -> None:
        self.users: dict[str, Any] = {}

    async def get_user(self, user_id: str) -> Any:
        return self.users.get(user_id)

    async def create_user(self, user_id: str, password_hash: Any, **kwargs: Any) -> None:
        assert password_hash is None and user_id not in self.users
        self.users[user_id] = kwargs


class Scene:
    def __init__(self, rooms: Sequence[str], failures: int = 0) -> None:
        self.state = FakeState()
        self.accounts = FakeAccounts()
        self.joins: list[tuple[RoomID, UserID, list[str]]] = []
        self.failures = failures
        self.aliases: dict[str, JsonDict] = {}
        self.service = PolicyListService(
            SERVER, ModerationConfig(policy_rooms=tuple(rooms)), cast(Any, self.state)
        )
        self.follower = PolicyListFollower(
            self.service, cast(Any, self.accounts), self.join, self.lookup
        )

    async def join(self, room_id: RoomID, user_id: UserID, servers: Sequence[str]) -> None:
        self.joins.append((room_id, user_id, list(servers)))
        if self.failures:
            self.failures -= 1
            raise MatrixError(Errcode.UNKNOWN, "unreachable", status=502)
        self.state.rooms.setdefault(room_id, {})

    async def lookup(self, alias: str) -> JsonDict:
        if alias not in self.aliases:
            raise MatrixError(Errcode.NOT_FOUND, f"Room alias {alias} not found")
        return self.aliases[alias]

    def rule(self, kind: str, entity: str, recommendation: str = "m.ban") -> None:
        content = {"entity": entity, "recommendation": recommendation, "reason": "r"}
        self.state.put(LIST, f"m.policy.rule.{kind}", f"rule:{entity}", content)

    def changed(self, room_id: str = LIST, **pdu: Any) -> None:
        fields = {"room_id": room_id, "type": "m.policy.rule.user", "state_key": "x"} | pdu
        self.follower.on_persisted([cast(Any, SimpleNamespace(pdu=SimpleNamespace(**fields)))])


async def _until(condition: Any) -> None:
    for _ in range(TIMEOUT * 100):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not reached in time")


async def test_follows_retries_with_backoff_and_reads_rules() -> None:
    scene = Scene([LIST], failures=2)
    scene.state.put(LIST, "m.room.create", "", {})
    scene.rule("user", "@spam*:evil.example")
    await scene.follower.start()
    try:
        room = scene.service.followed[0]
        await _until(lambda: room.status == "failed")
        assert room.error == "M_UNKNOWN: unreachable"
        await _until(lambda: room.status == "joined")
        # Two failures: retried after 1 s, then 2 s.
        assert len(scene.joins) == 3
        assert scene.joins[0] == (LIST, "@moderation:here.example", ["there.example"])
        assert scene.accounts.users == {
            "@moderation:here.example": scene.accounts.users["@moderation:here.example"]
        }
        await _until(lambda: scene.service.matcher.rules)
        assert scene.service.user_rule("@spam1:evil.example") is not None

        # A new rule, a replaced one, a non-ban one: re-read after the commit.
        scene.rule("server", "*.bad.example")
        scene.rule("user", "@spam*:evil.example", recommendation="m.mute")
        scene.changed()
        await _until(lambda: scene.service.server_rule(ServerName("x.bad.example")) is not None)
        assert scene.service.user_rule("@spam1:evil.example") is None
        assert scene.service.user_rule("@u:x.bad.example:8448") is not None
        described = scene.service.describe()
        assert described["counts"] == {"user": 0, "server": 1, "room": 0}
        assert described["rooms"] == [
            {"room": LIST, "room_id": LIST, "status": "joined", "rules": 1}
        ]

        # A redacted rule no longer counts.
        scene.state.redacted.add(f"${LIST}|m.policy.rule.server|rule:*.bad.example")
        scene.changed(type="m.room.redaction", state_key=None)
        await _until(lambda: not scene.service.matcher.rules)

        # Kicked out of the list: joined again.
        scene.changed(
            type="m.room.member", state_key="@moderation:here.example", membership="leave"
        )
        await _until(lambda: len(scene.joins) == 4 and room.status == "joined")
    finally:
        await scene.follower.stop()


async def test_backoff_doubles_and_is_capped() -> None:
    scene = Scene(["#list:there.example"])
    clock = [100.0]
    scene.follower._monotonic = lambda: clock[0]
    room = scene.service.followed[0]
    delays = []
    for _ in range(12):
        await scene.follower._follow(room)
        delays.append(room.retry_at - clock[0])
    assert room.status == "failed" and "not found" in (room.error or "")
    assert delays[:4] == [FIRST_RETRY_SECONDS, 2, 4, 8]
    assert delays[-1] == 300
    # The alias appears: the room is joined through the servers it names.
    scene.aliases["#list:there.example"] = {"room_id": LIST, "servers": ["a.example"]}
    await scene.follower._follow(room)
    status: str = room.status  # (mypy would keep the "failed" asserted above)
    assert status == "joined" and room.room_id == LIST
    assert scene.joins[-1][2] == ["a.example", "there.example"]
    assert scene.service.is_policy_room(LIST)


async def test_no_rooms_no_task() -> None:
    scene = Scene([])
    await scene.follower.start()
    assert scene.follower._task is None
    await scene.follower.stop()
    assert scene.accounts.users == {}


async def test_refusals_and_exemptions() -> None:
    scene = Scene([LIST])
    scene.state.put(
        ROOM,
        "m.room.canonical_alias",
        "",
        {"alias": "#lobby:here.example", "alt_aliases": ["#bad-2:here.example", 3]},
    )
    scene.rule("user", "@spam:evil.example")
    scene.rule("user", "@*:here.example")  # would ban everyone here, the policy user too
    scene.rule("server", "*.example")  # this server too
    scene.rule("room", "#bad-*:here.example")
    room = scene.service.followed[0]
    await scene.follower._follow(room)
    service = scene.service

    assert service.user_rule("@moderation:here.example") is None
    assert service.server_rule(SERVER) is None
    assert service.server_rule(ServerName("evil.example")) is not None
    assert service.user_rule("@ok:evil.example") is not None  # by the server rule
    assert service.user_rule("@alice:here.example") is not None

    with pytest.raises(MatrixError) as refused:
        await service.check_join(ROOM, UserID("@spam:evil.example"))
    assert refused.value.errcode is Errcode.FORBIDDEN and refused.value.status == 403
    # The room is banned through its published alt alias.
    assert await service.room_rule(ROOM) is not None
    with pytest.raises(MatrixError):
        await service.check_invite(
            RoomID("!other:x.org"), UserID("@moderation:here.example"), UserID("@spam:evil.example")
        )
    await service.check_invite(
        RoomID("!other:x.org"), UserID("@moderation:here.example"), UserID("@a:x.org")
    )
    # The policy user may join its lists; nobody's ban covers the list room itself.
    await service.check_join(LIST, UserID("@moderation:here.example"))
    assert await service.room_rule(LIST) is None
    with pytest.raises(MatrixError):
        service.check_server(ServerName("evil.example"), ROOM)
    service.check_server(ServerName("evil.example"), LIST)
    with pytest.raises(MatrixError):
        service.check_server(ServerName("evil.example"))

    # Transactions: a banned origin's PDUs dropped, but for the lists' own events.
    assert not service.admits_pdu(ServerName("evil.example"), {"room_id": ROOM, "sender": "@a:org"})
    assert not service.admits_pdu(ServerName("evil.example"), "not an object")
    assert service.admits_pdu(
        ServerName("evil.example"), {"room_id": LIST, "sender": "@spam:evil.example"}
    )
    assert service.admits_pdu(
        ServerName("fine.org"), {"room_id": ROOM, "sender": "@spam:evil.example"}
    )
    assert service.admits_pdu(ServerName("fine.org"), "not an object")
    # Banned senders' events are soft-failed, but in the lists.
    pdu = SimpleNamespace(room_id=ROOM, sender="@spam:evil.example")
    assert service.soft_fail_reason(cast(Any, pdu)) is not None
    assert (
        service.soft_fail_reason(cast(Any, SimpleNamespace(room_id=LIST, sender=pdu.sender)))
        is None
    )
    assert (
        service.soft_fail_reason(cast(Any, SimpleNamespace(room_id=ROOM, sender="@a:fine.org")))
        is None
    )


async def test_a_process_that_does_not_follow_reads_the_rules() -> None:
    """Issue 21: the follower runs on one process; every other reads the rules of the
    rooms it joined (an alias resolved with backoff while it fails), and reads them again
    after a followed room's events, without joining anything."""
    scene = Scene([LIST, "#list2:there.example"])
    other = RoomID("!list2:there.example")
    scene.rule("user", "@spam*:evil.example")
    scene.state.put(other, "m.policy.rule.server", "rule:bad", {"entity": "bad.example",
                    "recommendation": "m.ban", "reason": "r"})  # fmt: skip
    reader = PolicyRulesReader(scene.service, scene.lookup)
    await reader.start()
    try:
        await _until(lambda: scene.service.user_rule("@spam1:evil.example") is not None)
        assert scene.service.server_rule(ServerName("bad.example")) is None
        scene.aliases["#list2:there.example"] = {"room_id": other, "servers": []}
        # Retried after 1 s.
        await _until(lambda: scene.service.server_rule(ServerName("bad.example")) is not None)
        scene.rule("user", "@spam*:evil.example", recommendation="m.mute")
        reader.on_persisted([cast(Any, SimpleNamespace(pdu=SimpleNamespace(room_id=LIST)))])
        await _until(lambda: scene.service.user_rule("@spam1:evil.example") is None)
        assert scene.joins == [] and scene.accounts.users == {}
    finally:
        await reader.stop()


async def test_the_reader_forgets_its_retry_once_the_follower_resolved_the_room() -> None:
    """An alias the reader failed to resolve, resolved by the follower in the same
    process: the reader waits for changes again instead of retrying for ever."""
    scene = Scene(["#list:there.example"])
    reader = PolicyRulesReader(scene.service, scene.lookup)
    await reader._step()
    assert reader._retry
    scene.service.note_room_id(scene.service.followed[0], LIST)
    await reader._step()
    assert reader._retry == {}
