"""Client-Server API, "Room Tagging" (tags.yaml)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.types import RoomID, UserID

routes = RouteTable()

_TAGS = f"{CLIENT_V3}/user/{{userId}}/rooms/{{roomId}}/tags"


@routes.get(_TAGS)
async def get_tags(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags: ``{"tags": {...}}``."""
    tags = await ctx.services.account_data.get_tags(
        ctx.user.user_id, UserID(ctx.path["userId"]), RoomID(ctx.path["roomId"])
    )
    return json_response(tags)


@routes.put(f"{_TAGS}/{{tag}}")
async def add_tag(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}: the body is the
    tag's content (e.g. ``order``)."""
    body = await ctx.body()
    await ctx.services.account_data.add_tag(
        ctx.user.user_id,
        UserID(ctx.path["userId"]),
        RoomID(ctx.path["roomId"]),
        ctx.path["tag"],
        body.data,
    )
    return json_response({})


@routes.delete(f"{_TAGS}/{{tag}}")
async def remove_tag(ctx: RequestContext) -> web.Response:
    """DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}."""
    await ctx.services.account_data.remove_tag(
        ctx.user.user_id,
        UserID(ctx.path["userId"]),
        RoomID(ctx.path["roomId"]),
        ctx.path["tag"],
    )
    return json_response({})
