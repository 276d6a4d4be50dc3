"""Spaces on other servers: the Server-Server API's ``GET
/_matrix/federation/v1/hierarchy/{roomId}`` ("Spaces", space_hierarchy.yaml) asked of a
room's ``via`` servers, each answer checked field by field and kept briefly, as Synapse's
``FederationClient.get_room_hierarchy`` does.

Each server is asked for at most ``_ASK_SECONDS``; a well-formed answer is kept for
``_KEPT_SECONDS`` in a bounded LRU (a failure is not kept: an invite may open the room the
next moment).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from peyvand.lru import LRU
from peyvand.services.rooms.space_children import (
    MAX_CHILDREN_STATE,
    child_order,
    is_room_id,
    valid_via,
)
from peyvand.types import JsonDict, RoomID, ServerName

logger = logging.getLogger(__name__)

_ASK_SECONDS: Final = 10.0
_KEPT_SECONDS: Final = 60.0
_KEPT_ANSWERS: Final = 1024
# Children summaries and inaccessible children taken from one answer (Synapse serves 50).
_MAX_CHILDREN: Final = 50
# The string, integer and boolean fields of a summary (room_summary.yaml,
# public_rooms_chunk.yaml): what a remote answer may carry to the client.
_STRING_FIELDS: Final = (
    "name",
    "topic",
    "canonical_alias",
    "avatar_url",
    "join_rule",
    "room_type",
    "encryption",
    "room_version",
)
_BOOL_FIELDS: Final = ("world_readable", "guest_can_join")


class HierarchyRequests(Protocol):
    async def get_hierarchy(
        self, destination: ServerName, room_id: RoomID, *, suggested_only: bool
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class RemoteSpace:
    """A checked answer: the room's summary (``room`` without ``children_state``), its
    ``m.space.child`` events stripped and ordered, the summaries of the children the
    server gave, and the children it says the asking server may not see."""

    room: JsonDict
    children_state: tuple[JsonDict, ...]
    children: Mapping[RoomID, JsonDict]
    inaccessible_children: frozenset[RoomID]


class RemoteHierarchies:
    def __init__(
        self,
        server_name: ServerName,
        requests: HierarchyRequests | None,
        allows: Callable[[ServerName], bool],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``requests`` asks other servers (None: federation is off), those ``allows``
        lets through."""
        self._server_name = server_name
        self._requests = requests
        self._allows = allows
        self._clock = clock
        self._kept: LRU[tuple[RoomID, bool], tuple[float, RemoteSpace]] = LRU(_KEPT_ANSWERS)

    async def ask(
        self, room_id: RoomID, via: Sequence[str], *, suggested_only: bool
    ) -> RemoteSpace | None:
        """The room's hierarchy from the first of ``via`` (the caller bounds how many)
        that answers a well-formed one; None when none does."""
        key = (room_id, suggested_only)
        kept = self._kept.get(key)
        if kept is not None and kept[0] > self._clock():
            return kept[1]
        if self._requests is None:
            return None
        for server in via:
            name = ServerName(server)
            if name == self._server_name or not self._allows(name):
                continue
            try:
                async with asyncio.timeout(_ASK_SECONDS):
                    answer = await self._requests.get_hierarchy(
                        name, room_id, suggested_only=suggested_only
                    )
            except Exception as exc:
                logger.info("hierarchy of %s from %s failed: %s", room_id, server, exc)
                continue
            space = _checked_answer(answer, room_id)
            if space is not None:
                self._kept.put(key, (self._clock() + _KEPT_SECONDS, space))
                return space
            logger.info("hierarchy of %s from %s is malformed", room_id, server)
        return None


def _checked_answer(answer: Any, room_id: RoomID) -> RemoteSpace | None:
    if not isinstance(answer, dict):
        return None
    room = answer.get("room")
    summary = checked_summary(room, room_id)
    if summary is None:
        return None
    assert isinstance(room, dict)
    children = answer.get("children")
    inaccessible = answer.get("inaccessible_children")
    summaries = (
        (
            checked_summary(c, c.get("room_id"))
            for c in children[:_MAX_CHILDREN]
            if isinstance(c, dict)
        )
        if isinstance(children, list)
        else ()
    )
    return RemoteSpace(
        room=summary,
        children_state=_checked_children_state(room.get("children_state")),
        children={RoomID(s["room_id"]): s for s in summaries if s is not None},
        inaccessible_children=frozenset(
            RoomID(r) for r in inaccessible[:_MAX_CHILDREN] if is_room_id(r)
        )
        if isinstance(inaccessible, list)
        else frozenset(),
    )


def checked_summary(room: Any, room_id: Any) -> JsonDict | None:
    """The summary of ``room_id`` in another server's answer, keeping only the spec's
    fields with the right types (None when it is not that room's)."""
    if not isinstance(room, dict) or not is_room_id(room_id) or room.get("room_id") != room_id:
        return None
    members = room.get("num_joined_members")
    summary: JsonDict = {
        "room_id": room_id,
        "num_joined_members": members if type(members) is int and members >= 0 else 0,
    }
    for field in _BOOL_FIELDS:
        summary[field] = room.get(field) is True
    for field in _STRING_FIELDS:
        value = room.get(field)
        if isinstance(value, str):
            summary[field] = value
    allowed = room.get("allowed_room_ids")
    if isinstance(allowed, list):
        ids = [r for r in allowed if is_room_id(r)]
        if ids:
            summary["allowed_room_ids"] = ids
    return summary


def _checked_children_state(events: Any) -> tuple[JsonDict, ...]:
    """The well-formed ``m.space.child`` events of an answer, stripped (type, state_key,
    content, sender, origin_server_ts) and in the spec's order."""
    if not isinstance(events, list):
        return ()
    kept = [
        {
            "type": "m.space.child",
            "state_key": e["state_key"],
            "content": e["content"],
            "sender": e.get("sender") if isinstance(e.get("sender"), str) else "",
            "origin_server_ts": e["origin_server_ts"],
        }
        for e in events[:MAX_CHILDREN_STATE]
        if isinstance(e, dict)
        and e.get("type") == "m.space.child"
        and is_room_id(e.get("state_key"))
        and isinstance(e.get("content"), dict)
        and valid_via(e["content"].get("via"))
        and type(e.get("origin_server_ts")) is int
    ]
    kept.sort(key=lambda e: child_order(e["content"], e["origin_server_ts"], e["state_key"]))
    return tuple(kept)
