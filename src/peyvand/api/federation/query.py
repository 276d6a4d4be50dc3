"""Queries from other servers (query.yaml): room aliases and user profiles."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.errors import Errcode, MatrixError
from peyvand.types import RoomAlias, UserID, server_name_of

routes = RouteTable()

_V1 = "/_matrix/federation/v1"


def _required(ctx: RequestContext, name: str) -> str:
    value = ctx.query.get(name)
    if not value:
        raise MatrixError(Errcode.MISSING_PARAM, f"Missing '{name}' query parameter")
    return value


@routes.get(f"{_V1}/query/directory", auth="federation")
async def query_directory(ctx: RequestContext) -> web.Response:
    """GET /_matrix/federation/v1/query/directory?room_alias=...: one of our aliases."""
    alias = RoomAlias(_required(ctx, "room_alias"))
    if server_name_of(alias) != ctx.services.config.server_name:
        raise MatrixError(Errcode.NOT_FOUND, "Room alias not found")
    return json_response(await ctx.services.directory.get_alias(alias))


@routes.get(f"{_V1}/query/profile", auth="federation")
async def query_profile(ctx: RequestContext) -> web.Response:
    """GET /_matrix/federation/v1/query/profile?user_id=...[&field=...]: a local user's
    profile, custom fields included, or only the one ``field`` ("the server MUST only
    return the given field"); an unset custom field is 404, as Synapse answers."""
    user_id = UserID(_required(ctx, "user_id"))
    if server_name_of(user_id) != ctx.services.config.server_name:
        raise MatrixError(Errcode.NOT_FOUND, "User not found")
    field = ctx.query.get("field")
    if field is None:
        return json_response(await ctx.services.profile.get_profile(user_id))
    return json_response(await ctx.services.profile.get_field(user_id, field))
