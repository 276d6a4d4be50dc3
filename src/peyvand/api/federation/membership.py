"""Joining rooms (joins-v2.yaml) over federation."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.types import EventID, RoomID, UserID

routes = RouteTable()


@routes.get("/_matrix/federation/v1/make_join/{room_id}/{user_id}", auth="federation")
async def make_join(ctx: RequestContext) -> web.Response:
    """GET /_matrix/federation/v1/make_join/{roomId}/{userId}?ver=...: a join template."""
    versions = ctx.request.query.getall("ver", [])
    result = await ctx.services.federation.make_join(
        ctx.origin, RoomID(ctx.path["room_id"]), UserID(ctx.path["user_id"]), versions
    )
    return json_response(result)


@routes.put("/_matrix/federation/v2/send_join/{room_id}/{event_id}", auth="federation")
async def send_join(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}: the signed join."""
    result = await ctx.services.federation.send_join(
        ctx.origin,
        RoomID(ctx.path["room_id"]),
        EventID(ctx.path["event_id"]),
        await ctx.raw_json(),
    )
    return json_response(result)
