"""Client-Server API, "Client Config" (account-data.yaml)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.types import RoomID, UserID

routes = RouteTable()


@routes.get(f"{CLIENT_V3}/user/{{userId}}/account_data/{{type}}")
async def get_account_data(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/user/{userId}/account_data/{type}: 404 if never set."""
    content = await ctx.services.account_data.get_global(
        ctx.user.user_id, UserID(ctx.path["userId"]), ctx.path["type"]
    )
    return json_response(content)


@routes.put(f"{CLIENT_V3}/user/{{userId}}/account_data/{{type}}")
async def set_account_data(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/user/{userId}/account_data/{type}: the body is the content."""
    body = await ctx.body()
    await ctx.services.account_data.set_global(
        ctx.user.user_id, UserID(ctx.path["userId"]), ctx.path["type"], body.data
    )
    return json_response({})


@routes.get(f"{CLIENT_V3}/user/{{userId}}/rooms/{{roomId}}/account_data/{{type}}")
async def get_room_account_data(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}: 404 if
    never set."""
    content = await ctx.services.account_data.get_for_room(
        ctx.user.user_id,
        UserID(ctx.path["userId"]),
        RoomID(ctx.path["roomId"]),
        ctx.path["type"],
    )
    return json_response(content)


@routes.put(f"{CLIENT_V3}/user/{{userId}}/rooms/{{roomId}}/account_data/{{type}}")
async def set_room_account_data(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}: the body is
    the content."""
    body = await ctx.body()
    await ctx.services.account_data.set_for_room(
        ctx.user.user_id,
        UserID(ctx.path["userId"]),
        RoomID(ctx.path["roomId"]),
        ctx.path["type"],
        body.data,
    )
    return json_response({})
