"""Client-Server API, "Presence" (presence.yaml)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.errors import invalid_param
from peyvand.services.sync.presence import MAX_STATUS_MSG_LENGTH, STATES
from peyvand.types import UserID, is_valid_user_id

routes = RouteTable()


def _user_id(ctx: RequestContext) -> UserID:
    user_id = ctx.path["userId"]
    if not is_valid_user_id(user_id):
        raise invalid_param(f"Invalid user ID: {user_id!r}")
    return UserID(user_id)


@routes.get(f"{CLIENT_V3}/presence/{{userId}}/status")
async def get_presence(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/presence/{userId}/status"""
    status = await ctx.services.presence.get_status(ctx.user.user_id, _user_id(ctx))
    return json_response(status)


@routes.put(f"{CLIENT_V3}/presence/{{userId}}/status", rate_limited=True)
async def set_presence(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/presence/{userId}/status: ``presence`` and an optional
    ``status_msg``."""
    body = await ctx.body()
    presence = body.str("presence")
    if presence not in STATES:
        raise invalid_param(f"presence must be one of {', '.join(STATES)}")
    status_msg = body.str("status_msg", None)
    if status_msg is not None and len(status_msg) > MAX_STATUS_MSG_LENGTH:
        raise invalid_param(f"status_msg is longer than {MAX_STATUS_MSG_LENGTH} characters")
    await ctx.services.presence.set_status(ctx.user.user_id, _user_id(ctx), presence, status_msg)
    return json_response({})
