"""Simplified sliding sync (MSC4186): ``POST
/_matrix/client/unstable/org.matrix.simplified_msc3575/sync``.

The body is checked here, once, with the bounds of Synapse 1.163's ``SlidingSyncBody``: a
value of the wrong JSON type is 400 ``M_BAD_JSON``; one out of range ``M_INVALID_PARAM``
and a missing ``required_state`` or ``timeline_limit`` ``M_MISSING_PARAM`` (Synapse
answers most range errors, and any body with several errors, ``M_BAD_JSON``: the codes
here name the fault). At most 100 lists,
list names of at most 64 characters, ``timeline_limit`` at most 1,000; this server also
bounds each list's ranges (100), the subscriptions (1,000), ``required_state`` (1,000
pairs of at most 255 bytes each), ``conn_id`` (255 bytes) and each filter's values (100),
and a range must not end before it starts. Overlapping ranges of a list are merged
(``merged_ranges``), so a response names a room at most once per list.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from peyvand.api.client.sync import abandoned, client_gone
from peyvand.api.context import RequestContext, json_response, send_now
from peyvand.api.routing import RouteTable
from peyvand.api.validation import Body, query_int
from peyvand.errors import Errcode, MatrixError
from peyvand.services.sync.notifier import ClientGone, abandoned_when
from peyvand.services.sync.sliding.ext_request import parse_extensions
from peyvand.services.sync.sliding.request import (
    ListConfig,
    ListFilters,
    RoomParams,
    SlidingSyncRequest,
    StatePair,
)
from peyvand.types import RoomID

routes = RouteTable()

SLIDING_SYNC_PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
MAX_TIMEOUT_MS = 5 * 60 * 1000
MAX_LISTS = 100
MAX_LIST_NAME = 64
MAX_RANGES = 100
MAX_SUBSCRIPTIONS = 1000
MAX_REQUIRED_STATE = 1000
MAX_TIMELINE_LIMIT = 1000
# An event type or state key of required_state, and a conn_id: the spec's 255 bytes for
# event types and opaque identifiers (a connection's ID is held in memory as its key).
MAX_STRING_BYTES = 255
# Values of one filter (spaces, tags, room types).
MAX_FILTER_VALUES = 100


@routes.post(SLIDING_SYNC_PATH)
async def sliding_sync(ctx: RequestContext) -> web.StreamResponse:
    """POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync"""
    query = ctx.query
    set_presence = query.get("set_presence", "online")
    if set_presence not in ("online", "offline", "unavailable"):
        raise MatrixError(Errcode.INVALID_PARAM, "Invalid set_presence")
    pos = query.get("pos")
    timeout_ms = min(query_int(query, "timeout", 0), MAX_TIMEOUT_MS) if pos else 0
    request = parse_request(await ctx.body())
    try:
        with abandoned_when(lambda: client_gone(ctx.request)):
            async with ctx.services.presence.syncing(ctx.user.user_id, set_presence):
                result = await ctx.services.sliding_sync.sync(ctx.user, request, pos, timeout_ms)
    except ClientGone:
        return abandoned(ctx)
    return await send_now(ctx.request, json_response(result))


def parse_request(body: Body) -> SlidingSyncRequest:
    """The request body as a ``SlidingSyncRequest``."""
    lists = _object(body, "lists")
    if len(lists) > MAX_LISTS:
        raise MatrixError(Errcode.INVALID_PARAM, f"At most {MAX_LISTS} lists")
    subscriptions = _object(body, "room_subscriptions")
    if len(subscriptions) > MAX_SUBSCRIPTIONS:
        raise MatrixError(Errcode.INVALID_PARAM, f"At most {MAX_SUBSCRIPTIONS} subscriptions")
    extensions = parse_extensions(_object(body, "extensions"))
    parsed_lists: dict[str, ListConfig] = {}
    for name, value in lists.items():
        if len(name) > MAX_LIST_NAME:
            raise MatrixError(Errcode.INVALID_PARAM, f"List names are at most {MAX_LIST_NAME}")
        parsed_lists[name] = _list(_as_body(value, f"lists.{name}"))
    conn_id = body.str("conn_id", None)
    if conn_id is not None and _too_long(conn_id):
        raise MatrixError(Errcode.INVALID_PARAM, f"conn_id is at most {MAX_STRING_BYTES} bytes")
    return SlidingSyncRequest(
        conn_id=conn_id,
        lists=parsed_lists,
        room_subscriptions={
            RoomID(room_id): _room_params(_as_body(value, f"room_subscriptions.{room_id}"))
            for room_id, value in subscriptions.items()
        },
        extensions=extensions,
    )


def _object(body: Body, key: str) -> dict[str, Any]:
    """An optional object of the body (null or absent: empty)."""
    value: dict[str, Any] = body.dict(key, {})
    return value


def _as_body(value: object, where: str) -> Body:
    if not isinstance(value, dict):
        raise MatrixError(Errcode.BAD_JSON, f"'{where}' must be an object")
    return Body(value)


def _room_params(body: Body) -> RoomParams:
    """``required_state`` and ``timeline_limit`` (MSC4186 "Room configuration"), and
    ``unread_thread_notifications`` (MSC3773, as in /sync's filter)."""
    pairs = body.list("required_state")
    if len(pairs) > MAX_REQUIRED_STATE:
        raise MatrixError(Errcode.INVALID_PARAM, f"At most {MAX_REQUIRED_STATE} required_state")
    required: set[StatePair] = set()
    for pair in pairs:
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        ):
            raise MatrixError(
                Errcode.BAD_JSON, "'required_state' must be [event type, state key] pairs"
            )
        if _too_long(pair[0]) or _too_long(pair[1]):
            raise MatrixError(
                Errcode.INVALID_PARAM,
                f"'required_state' types and state keys are at most {MAX_STRING_BYTES} bytes",
            )
        required.add((pair[0], pair[1]))
    limit = body.int("timeline_limit", minimum=0, maximum=MAX_TIMELINE_LIMIT)
    threads = body.bool("unread_thread_notifications", False)
    return RoomParams(frozenset(required), limit, threads)


def _list(body: Body) -> ListConfig:
    """A list: its ranges, room params and filters (MSC4186 "Lists")."""
    body.bool("slow_get_all_rooms", False)
    ranges = body.list("ranges", [])
    if len(ranges) > MAX_RANGES:
        raise MatrixError(Errcode.INVALID_PARAM, f"At most {MAX_RANGES} ranges")
    parsed: list[tuple[int, int]] = []
    for bounds in ranges:
        if not (
            isinstance(bounds, list)
            and len(bounds) == 2
            and all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
        ):
            raise MatrixError(Errcode.BAD_JSON, "A range is two integers")
        start, end = bounds
        if not 0 <= start <= end:
            raise MatrixError(Errcode.INVALID_PARAM, "A range is [start, end], 0 <= start <= end")
        parsed.append((start, end))
    filters = body.dict("filters", None)
    return ListConfig(
        merged_ranges(parsed),
        _room_params(body),
        _filters(Body(filters)) if filters is not None else ListFilters(),
    )


def merged_ranges(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """The ranges in order, those that overlap merged into one, so that no position
    (no room) is in two of a list's ranges: 100 ranges ``[0, 100000]`` are one, not a
    response naming every room 100 times. MSC4186 does not say how overlapping ranges
    are answered (Synapse sends a ``SYNC`` op per range, each with its rooms); the
    ops are then those of the merged ranges."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


def _filters(body: Body) -> ListFilters:
    """A list's ``filters`` (MSC4186 "Filters"); ``room_name_like`` is accepted and,
    as in Synapse, not applied."""
    body.str("room_name_like", None)
    return ListFilters(
        is_dm=_optional_bool(body, "is_dm"),
        spaces=tuple(RoomID(s) for s in _strings(body, "spaces")) if _set(body, "spaces") else None,
        is_encrypted=_optional_bool(body, "is_encrypted"),
        is_invite=_optional_bool(body, "is_invite"),
        room_types=_room_types(body, "room_types"),
        not_room_types=_room_types(body, "not_room_types"),
        tags=frozenset(_strings(body, "tags")) if _set(body, "tags") else None,
        not_tags=frozenset(_strings(body, "not_tags")) if _set(body, "not_tags") else None,
    )


def _strings(body: Body, key: str) -> list[str]:
    """A filter's array of strings, of at most ``MAX_FILTER_VALUES``."""
    values = body.str_list(key)
    _check_count(values, key)
    return values


def _check_count(values: list[Any], key: str) -> None:
    if len(values) > MAX_FILTER_VALUES:
        raise MatrixError(Errcode.INVALID_PARAM, f"'{key}' has at most {MAX_FILTER_VALUES} values")


def _too_long(text: str) -> bool:
    return len(text.encode()) > MAX_STRING_BYTES


def _set(body: Body, key: str) -> bool:
    return body.data.get(key) is not None


def _optional_bool(body: Body, key: str) -> bool | None:
    return body.bool(key) if _set(body, key) else None


def _room_types(body: Body, key: str) -> frozenset[str | None] | None:
    """Room types, where null stands for rooms without a type."""
    if not _set(body, key):
        return None
    values = body.list(key)
    _check_count(values, key)
    if not all(v is None or isinstance(v, str) for v in values):
        raise MatrixError(Errcode.BAD_JSON, f"'{key}' must be an array of strings or nulls")
    return frozenset(values)
