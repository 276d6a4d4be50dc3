"""Which ``required_state`` needs a room's full state (rooms joined with partial state,
MSC3706, are left out of lists and subscriptions that need it), as Synapse's
``RoomSyncConfig.must_await_full_state``."""

from __future__ import annotations

import pytest

from peyvand.services.sync.sliding.request import RoomParams


def is_mine(user_id: str) -> bool:
    return user_id.partition(":")[2] == "local.test"


@pytest.mark.parametrize(
    ("required", "needs_full"),
    [
        ([], False),
        ([["m.room.name", ""]], False),
        ([["*", "*"]], True),
        ([["*", "@bob:remote.test"]], True),
        ([["*", "@alice:local.test"]], False),
        ([["m.room.member", "$LAZY"], ["m.room.member", "$ME"]], False),
        ([["m.room.member", "@alice:local.test"]], False),
        ([["m.room.member", "@bob:remote.test"]], True),
        ([["m.room.member", "*"]], False),
    ],
)
def test_must_await_full_state(required: list[list[str]], needs_full: bool) -> None:
    params = RoomParams(frozenset((t, k) for t, k in required), 1)
    assert params.must_await_full_state(is_mine) is needs_full
