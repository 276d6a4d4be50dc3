"""Client-Server API, "Events": jump to date (room_event_by_timestamp.yaml)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.api.timestamp_query import timestamp_query
from peyvand.errors import Errcode, MatrixError
from peyvand.types import RoomID

routes = RouteTable()


@routes.get("/_matrix/client/v1/rooms/{roomId}/timestamp_to_event", rate_limited=True)
async def timestamp_to_event(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event?ts=...&dir=f|b: the
    closest event the user may see, asking other servers when local history has a gap
    (rate-limited: an answer may cost requests to them and a backfill)."""
    raw_room = ctx.path["roomId"]
    if not raw_room.startswith("!"):
        raise MatrixError(Errcode.INVALID_PARAM, f"Invalid room ID: {raw_room}")
    timestamp, direction = timestamp_query(ctx.query)
    found = await ctx.services.timestamp_lookup.for_client(
        ctx.user.user_id, RoomID(raw_room), timestamp, direction
    )
    return json_response(found.as_json())
