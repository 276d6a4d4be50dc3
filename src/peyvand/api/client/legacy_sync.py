"""Client-Server API, the deprecated reads before /sync: GET /initialSync, GET /events
(old_sync.yaml; with ``room_id``, peeking_events.yaml) and GET /rooms/{roomId}/initialSync
(room_initial_sync.yaml)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.client.sync import abandoned, client_gone
from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.api.validation import query_bool, query_int
from peyvand.errors import Errcode, MatrixError
from peyvand.services.sync.legacy import DEFAULT_LIMIT, MAX_LIMIT
from peyvand.services.sync.notifier import ClientGone, abandoned_when
from peyvand.services.sync.streams import StreamToken
from peyvand.types import RoomID

routes = RouteTable()

MAX_TIMEOUT_MS = 5 * 60 * 1000


def _limit(ctx: RequestContext, minimum: int) -> int:
    return min(query_int(ctx.query, "limit", DEFAULT_LIMIT, minimum=minimum), MAX_LIMIT)


def _room_id(raw: str) -> RoomID:
    if not raw.startswith("!"):
        raise MatrixError(Errcode.INVALID_PARAM, f"Invalid room ID: {raw}")
    return RoomID(raw)


@routes.get(f"{CLIENT_V3}/initialSync")
async def initial_sync(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/initialSync"""
    result = await ctx.services.legacy_sync.initial_sync(
        ctx.user, limit=_limit(ctx, 0), archived=query_bool(ctx.query, "archived", False)
    )
    return json_response(result)


@routes.get(f"{CLIENT_V3}/rooms/{{roomId}}/initialSync")
async def room_initial_sync(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/rooms/{roomId}/initialSync"""
    result = await ctx.services.legacy_sync.room_initial_sync(
        ctx.user, _room_id(ctx.path["roomId"]), limit=_limit(ctx, 0)
    )
    return json_response(result)


@routes.get(f"{CLIENT_V3}/events")
async def events(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/events"""
    query = ctx.query
    raw_from = query.get("from")
    raw_room = query.get("room_id")
    try:
        with abandoned_when(lambda: client_gone(ctx.request)):
            result = await ctx.services.legacy_sync.events(
                ctx.user,
                from_token=StreamToken.parse(raw_from) if raw_from else None,
                timeout_ms=min(query_int(query, "timeout", 30_000), MAX_TIMEOUT_MS),
                limit=_limit(ctx, 1),
                room_id=_room_id(raw_room) if raw_room is not None else None,
            )
    except ClientGone:
        return abandoned(ctx)
    return json_response(result)
