"""``PusherDeps`` for one ``HttpPusher`` run in process with fakes: a badge of 1, rooms
without name or members, no ignored users, no caught-up event evaluated again (its
actions are None), four sends at once (and per host), content included."""

from __future__ import annotations

import asyncio
from typing import Any

from peyvand.events.pdu import Pdu
from peyvand.events.push_rules.actions import Actions
from peyvand.services.push.delivery.payload import RoomContext
from peyvand.services.push.delivery.pusher import PusherDeps
from peyvand.types import UserID


async def _badge(user_id: UserID) -> int:
    return 1


async def _context(event: Pdu) -> RoomContext:
    return RoomContext(None, None, None)


async def _ignored(user_id: UserID) -> frozenset[UserID]:
    return frozenset()


async def _actions_now(user_id: UserID, event: Pdu) -> Actions | None:
    return None


def fake_pusher_deps(**given: Any) -> PusherDeps:
    """The fakes above, with ``given`` for the rest of the fields (``notify``,
    ``pending``, ``get_pdus``, ``set_delivered``, ``set_failing_since``, ``remove``,
    ``now_ms``)."""
    defaults: dict[str, Any] = {
        "semaphore": asyncio.Semaphore(4),
        "host_semaphore": lambda url: asyncio.Semaphore(4),
        "badge": _badge,
        "room_context": _context,
        "ignored": _ignored,
        "actions_now": _actions_now,
        "include_content": True,
    }
    return PusherDeps(**(defaults | given))
