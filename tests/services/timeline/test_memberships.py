"""A room snapshot's membership views (joined users, their servers, one server's joined
users) are cached per membership change (issue 15) and always equal a fresh scan, after
every kind of change."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from peyvand.services.timeline.room_state import Memberships
from peyvand.types import ServerName, UserID, server_name_of

HERE = ServerName("here.example")
THERE = ServerName("there.example")
A = UserID("@a:here.example")
B = UserID("@b:there.example")
C = UserID("@c:here.example")


def _check(members: Memberships) -> None:
    joined = tuple(u for u, m in members.items() if m == "join")
    assert members.joined() == joined
    assert members.joined_servers() == {server_name_of(u) for u in joined}
    for server in (HERE, THERE):
        assert members.joined_on(server) == tuple(u for u in joined if server_name_of(u) == server)


CHANGES: list[Callable[[Memberships], object]] = [
    lambda m: m.__setitem__(B, "leave"),
    lambda m: m.__setitem__(C, "join"),
    lambda m: m.__delitem__(A),
    lambda m: m.update({C: "join"}),
    lambda m: m.__ior__({C: "join", A: "ban"}),
    lambda m: m.setdefault(C, "join"),
    lambda m: m.pop(A),
    lambda m: m.popitem(),
    lambda m: m.clear(),
]


@pytest.mark.parametrize("change", CHANGES)
def test_views_follow_every_change(change: Callable[[Memberships], object]) -> None:
    members = Memberships({A: "join", B: "join", C: "invite"})
    _check(members)  # views computed (and cached) before the change
    change(members)
    _check(members)
