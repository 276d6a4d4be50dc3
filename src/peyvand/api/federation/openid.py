"""Server-Server API "OpenID" (openid.yaml): whom an OpenID token belongs to."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.errors import Errcode, MatrixError

routes = RouteTable()


@routes.get("/_matrix/federation/v1/openid/userinfo", auth="none", rate_limited=True)
async def userinfo(ctx: RequestContext) -> web.Response:
    """GET /_matrix/federation/v1/openid/userinfo?access_token=: ``{"sub": user_id}`` for
    a valid token, 401 ``M_UNKNOWN_TOKEN`` for an unknown or expired one. Asked by any
    third party, not only servers, so it takes no X-Matrix signature."""
    token = ctx.query.get("access_token")
    if not token:
        raise MatrixError(Errcode.MISSING_TOKEN, "Access token required")
    user_id = await ctx.services.openid.userinfo(token)
    if user_id is None:
        raise MatrixError(Errcode.UNKNOWN_TOKEN, "Access token unknown or expired")
    return json_response({"sub": user_id})
