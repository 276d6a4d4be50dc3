"""Joining, leaving, knocking and inviting over federation (joins-v2.yaml,
leaving-v2.yaml, knocks.yaml, invites-v2.yaml)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.api.validation import query_bool
from peyvand.types import EventID, RoomID, UserID

routes = RouteTable()


@routes.get("/_matrix/federation/v1/make_join/{room_id}/{user_id}", auth="federation")
async def make_join(ctx: RequestContext) -> web.Response:
    """GET /_matrix/federation/v1/make_join/{roomId}/{userId}?ver=...: a join template
    (``ver`` defaults to room version 1, as the spec says)."""
    versions = ctx.request.query.getall("ver", []) or ["1"]
    result = await ctx.services.federation.inbound_membership.make_join(
        ctx.origin, RoomID(ctx.path["room_id"]), UserID(ctx.path["user_id"]), versions
    )
    return json_response(result)


@routes.put("/_matrix/federation/v2/send_join/{room_id}/{event_id}", auth="federation")
async def send_join(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}?omit_members=...: the
    signed join."""
    result = await ctx.services.federation.inbound_membership.send_join(
        ctx.origin,
        RoomID(ctx.path["room_id"]),
        EventID(ctx.path["event_id"]),
        await ctx.raw_json(),
        omit_members=query_bool(ctx.query, "omit_members", False),
    )
    return json_response(result)


@routes.get("/_matrix/federation/v1/make_leave/{room_id}/{user_id}", auth="federation")
async def make_leave(ctx: RequestContext) -> web.Response:
    """GET /_matrix/federation/v1/make_leave/{roomId}/{userId}: a leave template."""
    result = await ctx.services.federation.inbound_membership.make_leave(
        ctx.origin, RoomID(ctx.path["room_id"]), UserID(ctx.path["user_id"])
    )
    return json_response(result)


@routes.put("/_matrix/federation/v2/send_leave/{room_id}/{event_id}", auth="federation")
async def send_leave(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}: the signed leave."""
    result = await ctx.services.federation.inbound_membership.send_leave(
        ctx.origin,
        RoomID(ctx.path["room_id"]),
        EventID(ctx.path["event_id"]),
        await ctx.raw_json(),
    )
    return json_response(result)


@routes.put("/_matrix/federation/v2/invite/{room_id}/{event_id}", auth="federation")
async def invite(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/federation/v2/invite/{roomId}/{eventId}: an invite of one of our users."""
    result = await ctx.services.federation.invite_inbox.on_invite(
        ctx.origin,
        RoomID(ctx.path["room_id"]),
        EventID(ctx.path["event_id"]),
        await ctx.raw_json(),
    )
    return json_response(result)


@routes.get("/_matrix/federation/v1/make_knock/{room_id}/{user_id}", auth="federation")
async def make_knock(ctx: RequestContext) -> web.Response:
    """GET /_matrix/federation/v1/make_knock/{roomId}/{userId}?ver=...: a knock template."""
    result = await ctx.services.federation.inbound_membership.make_knock(
        ctx.origin,
        RoomID(ctx.path["room_id"]),
        UserID(ctx.path["user_id"]),
        ctx.request.query.getall("ver", []),
    )
    return json_response(result)


@routes.put("/_matrix/federation/v1/send_knock/{room_id}/{event_id}", auth="federation")
async def send_knock(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}: the signed knock."""
    result = await ctx.services.federation.inbound_membership.send_knock(
        ctx.origin,
        RoomID(ctx.path["room_id"]),
        EventID(ctx.path["event_id"]),
        await ctx.raw_json(),
    )
    return json_response(result)
