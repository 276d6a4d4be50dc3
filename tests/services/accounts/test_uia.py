"""``UserInteractiveAuth`` sessions in memory (Client-Server API, "User-interactive
authentication API"): they expire an hour after they were created, however recently
they were used."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from peyvand.errors import MatrixError
from peyvand.services.accounts.uia import DUMMY, PASSWORD, AuthIncomplete, UserInteractiveAuth

FLOWS = [[DUMMY, PASSWORD]]


async def _passes(auth: Mapping[str, Any]) -> None:
    return None


CHECKERS = {DUMMY: _passes, PASSWORD: _passes}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _start(uia: UserInteractiveAuth, auth: Mapping[str, Any] | None) -> str:
    with pytest.raises(AuthIncomplete) as incomplete:
        await uia.check(auth, flows=FLOWS, checkers=CHECKERS, operation="op", user_id=None)
    return incomplete.value.session


async def test_a_session_used_later_still_expires_an_hour_after_it_was_created() -> None:
    clock = Clock()
    uia = UserInteractiveAuth(clock=clock)
    first = await _start(uia, None)
    clock.now += 10
    second = await _start(uia, None)
    clock.now += 10
    # Using the first session does not move it behind the second.
    assert await _start(uia, {"session": first, "type": DUMMY}) == first
    clock.now += 3600 - 15
    # The first is past its hour, the second is not.
    with pytest.raises(MatrixError) as unknown:
        await _start(uia, {"session": first})
    assert not isinstance(unknown.value, AuthIncomplete)
    assert unknown.value.message == "Unknown or expired session ID"
    assert await _start(uia, {"session": second}) == second


async def test_a_completed_session_is_gone_unless_reusable() -> None:
    uia = UserInteractiveAuth(clock=Clock())
    session = await _start(uia, {"type": DUMMY})
    done = await uia.check(
        {"session": session, "type": PASSWORD},
        flows=FLOWS,
        checkers=CHECKERS,
        operation="op",
        user_id=None,
    )
    assert done.session_id == session
    with pytest.raises(MatrixError, match="Unknown or expired session ID"):
        await _start(uia, {"session": session})
