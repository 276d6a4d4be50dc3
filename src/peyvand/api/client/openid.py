"""Client-Server API "OpenID" (openid.yaml): tokens a third party checks with this server."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.errors import Errcode, MatrixError

routes = RouteTable()


@routes.post(f"{CLIENT_V3}/user/{{userId}}/openid/request_token", rate_limited=True)
async def request_token(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/user/{userId}/openid/request_token: an OpenID token proving
    the requester's identity to a third party; only for oneself (403 otherwise). The body
    must be a JSON object (``{}``)."""
    user = ctx.user
    await ctx.body()
    if ctx.path["userId"] != user.user_id:
        raise MatrixError(Errcode.FORBIDDEN, "Cannot request tokens for other users")
    token = await ctx.services.openid.request_token(user.user_id)
    return json_response(token.to_json())
