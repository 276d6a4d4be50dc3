"""Client-Server API, "Filtering": API endpoints (filter.yaml)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.errors import Errcode, MatrixError
from peyvand.services.sync.filtering import parse_filter
from peyvand.types import UserID

routes = RouteTable()


def _own_user(ctx: RequestContext) -> UserID:
    """The path's userId, which must be the requester ("The access token must be
    authorised to make requests for this user id")."""
    if ctx.path["userId"] != ctx.user.user_id:
        raise MatrixError(Errcode.FORBIDDEN, "Cannot use filters of other users")
    return ctx.user.user_id


@routes.post(f"{CLIENT_V3}/user/{{userId}}/filter")
async def define_filter(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/user/{userId}/filter: validate and store a filter."""
    user_id = _own_user(ctx)
    body = await ctx.body()
    parse_filter(body.data)
    filter_id = await ctx.services.auth.add_filter(user_id, body.data)
    return json_response({"filter_id": filter_id})


@routes.get(f"{CLIENT_V3}/user/{{userId}}/filter/{{filterId}}")
async def get_filter(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/user/{userId}/filter/{filterId}: the filter as uploaded."""
    user_id = _own_user(ctx)
    stored = await ctx.services.auth.get_filter(user_id, ctx.path["filterId"])
    if stored is None:
        raise MatrixError(Errcode.NOT_FOUND, "No such filter")
    return json_response(stored)
