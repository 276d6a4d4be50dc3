"""``python -m bench.push_eval``: CPU cost of push-rule evaluation per member per message.

A micro-benchmark of the pre-commit push-action hook (``PushActionsService.prepare``,
Client-Server API "Push Rules"; DESIGN.md §1: a send costs well under a millisecond). It
builds one room of N local members in memory (default rulesets; one member in 50 has a
custom keyword rule, one in 100 a display name), with the real ``PushRulesService`` (and its
default cache size) over an in-memory rule store, and times ``prepare`` for m.room.message
events (plain, with a keyword, with a user mention, with a room mention): evaluation only,
no database write. ``reads`` is the rule store's reads (queries) per message.

The figure is CPU time of this process (``time.process_time``: user + system), not wall
time, so load from other processes on the machine does not count. Bounded: at most
``--rounds`` rounds per size and ``--budget`` seconds in all.

    python -m bench.push_eval [--sizes 20,200,2000,10000] [--rounds 20] [--budget 120]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any, cast

from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS
from peyvand.services.push.actions import PushActionsService
from peyvand.services.push.rules_api import PushRulesService
from peyvand.services.timeline.room_state import RoomSnapshot
from peyvand.storage.models import EventToPersist, StateGroupRow
from peyvand.storage.push_rules import DefaultRuleRow, PushRuleRow
from peyvand.types import EventID, JsonDict, RoomID, ServerName, UserID

SERVER = ServerName("bench.local")
ROOM = RoomID("!bench:bench.local")
VERSION = KNOWN_ROOM_VERSIONS["11"]
SENDER = UserID("@sender:bench.local")


def _user(i: int) -> UserID:
    return UserID(f"@user{i}:bench.local")


def _pdu(event_id: str, event_type: str, sender: str, content: JsonDict, **extra: Any) -> Pdu:
    data = {"type": event_type, "room_id": ROOM, "sender": sender, "content": content, **extra}
    return Pdu(data, EventID(event_id), VERSION)


class _Room:
    """One room's state in memory, in the shape ``PushActionsService`` reads."""

    def __init__(self, members: Iterable[UserID]) -> None:
        self.events: dict[EventID, Pdu] = {}
        self.snapshot = RoomSnapshot(
            room_id=ROOM,
            room_version=VERSION,
            state={},
            memberships={},
            extremities=[],
            depth=1,
            state_group=StateGroupRow(1, ROOM, 1, None, None),
        )
        self._set(_pdu("$create", "m.room.create", SENDER, {}, state_key=""))
        self._set(
            _pdu("$power", "m.room.power_levels", SENDER, {"users": {SENDER: 100}}, state_key="")
        )
        for i, user_id in enumerate(members):
            content: JsonDict = {"membership": "join"}
            if i % 100 == 1:
                content["displayname"] = f"Name {i}"
            self._set(_pdu(f"$join{i}", "m.room.member", user_id, content, state_key=user_id))

    def _set(self, event: Pdu) -> None:
        assert event.state_key is not None
        self.snapshot.state[(event.type, event.state_key)] = event.event_id
        self.events[event.event_id] = event
        if event.type == "m.room.member":
            self.snapshot.memberships[UserID(event.state_key)] = str(event.content["membership"])

    async def get_room(self, room_id: RoomID) -> RoomSnapshot | None:
        return self.snapshot

    async def get_state_events(
        self, state: Mapping[StateKey, EventID], keys: Iterable[StateKey]
    ) -> dict[StateKey, Pdu]:
        return {k: self.events[state[k]] for k in keys if k in state}


class _RuleStore:
    """``PushRuleStore.get_rules`` from memory: one member in 50 has a keyword rule.
    ``reads`` counts the reads, each of which is a query in the real store."""

    def __init__(self) -> None:
        self.reads = 0

    async def get_rules_of(
        self, user_ids: Iterable[str]
    ) -> dict[str, tuple[list[PushRuleRow], list[DefaultRuleRow]]]:
        return {user_id: await self.get_rules(user_id) for user_id in user_ids}

    async def get_rules(self, user_id: str) -> tuple[list[PushRuleRow], list[DefaultRuleRow]]:
        self.reads += 1
        number = int(user_id[5 : user_id.index(":")]) if user_id.startswith("@user") else 0
        if number % 50 != 7:
            return [], []
        pattern = f"keyword{number % 5}"
        return [
            PushRuleRow("content", "kw", [], pattern, ["notify", {"set_tweak": "highlight"}], True)
        ], []


class _NoReceipts:
    async def read_positions(self, user_id: UserID, room_ids: object) -> dict[RoomID, int]:
        return {}


async def _no_ignored(user_id: UserID) -> frozenset[UserID]:
    return frozenset()


MESSAGES: Mapping[str, JsonDict] = {
    "plain": {"msgtype": "m.text", "body": "hello there, how are things today?"},
    "keyword": {"msgtype": "m.text", "body": "who has keyword3 for me"},
    "user mention": {
        "msgtype": "m.text",
        "body": "user3: look",
        "m.mentions": {"user_ids": [str(_user(3))]},
    },
    "room mention": {"msgtype": "m.text", "body": "all: look", "m.mentions": {"room": True}},
}


async def _measure(size: int, rounds: int, deadline: float) -> dict[str, float]:
    """CPU microseconds per member per message for each kind of message, and the rule
    store's reads per message (``reads``), all with warm caches."""
    members = [SENDER, *(_user(i) for i in range(size - 1))]
    room = _Room(members)
    store = _RuleStore()
    rules = PushRulesService(cast(Any, store))
    service = PushActionsService(
        SERVER, cast(Any, None), cast(Any, room), rules, _NoReceipts(), _no_ignored
    )
    results: dict[str, float] = {}
    ordering, reads, timed = 0, 0, 0
    for name, content in MESSAGES.items():
        elapsed, done = 0.0, 0
        for i in range(rounds + 1):
            if time.monotonic() > deadline:
                break
            ordering += 1
            persisted = EventToPersist(
                pdu=_pdu(f"${name}{i}", "m.room.message", SENDER, dict(content)),
                stream_ordering=ordering,
                state_group=1,
                new_state_group=None,
                txn=None,
                relates_to=None,
                rel_type=None,
                new_extremities=(),
            )
            before, start = store.reads, time.process_time()
            await service.prepare([persisted])
            spent = time.process_time() - start
            if i > 0:  # the first round fills the caches (rulesets, room context)
                elapsed += spent
                done += 1
                reads += store.reads - before
        if done:
            results[name] = elapsed / done / size * 1e6
            timed += done
    results["reads"] = reads / max(timed, 1)
    return results


async def _main(sizes: list[int], rounds: int, budget: float) -> None:
    deadline = time.monotonic() + budget
    print(f"CPU µs per member per message (process_time, {rounds} rounds, warm caches)")
    columns = [*MESSAGES, "reads"]
    print(f"{'members':>8}  " + "  ".join(f"{name:>12}" for name in columns))
    for size in sizes:
        if time.monotonic() > deadline:
            print(f"{size:>8}  (budget spent)")
            continue
        figures = await _measure(size, rounds, deadline)
        print(f"{size:>8}  " + "  ".join(f"{figures.get(n, float('nan')):>12.2f}" for n in columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="20,200,2000,10000")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--budget", type=float, default=120.0)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    asyncio.run(_main(sizes, max(1, min(args.rounds, 1000)), args.budget))


if __name__ == "__main__":
    main()
