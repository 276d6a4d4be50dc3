"""Server-Server API: jump to date for other servers (events.yaml,
``GET /timestamp_to_event/{roomId}``)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.api.timestamp_query import timestamp_query
from peyvand.types import RoomID

routes = RouteTable()


@routes.get("/_matrix/federation/v1/timestamp_to_event/{room_id}", auth="federation")
async def timestamp_to_event(ctx: RequestContext) -> web.Response:
    """GET /_matrix/federation/v1/timestamp_to_event/{roomId}?ts=...&dir=f|b: this
    server's closest event (404 when none)."""
    timestamp, direction = timestamp_query(ctx.query)
    found = await ctx.services.timestamp_lookup.for_server(
        ctx.origin, RoomID(ctx.path["room_id"]), timestamp, direction
    )
    return json_response(found.as_json())
