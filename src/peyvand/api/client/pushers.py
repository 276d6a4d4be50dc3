"""Client-Server API, "Push Notifications": the pusher endpoints (pusher.yaml)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable

routes = RouteTable()


@routes.get(f"{CLIENT_V3}/pushers")
async def get_pushers(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/pushers: the user's pushers."""
    return json_response({"pushers": await ctx.services.pushers.get_pushers(ctx.user.user_id)})


@routes.post(f"{CLIENT_V3}/pushers/set", rate_limited=True)
async def set_pusher(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/pushers/set: create, replace or (``kind`` null) delete a
    pusher (``services.pushers``)."""
    body = await ctx.body()
    await ctx.services.pushers.set_pusher(ctx.user.user_id, ctx.user.device_id, body.data)
    return json_response({})
