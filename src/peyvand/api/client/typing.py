"""Client-Server API, "Typing Notifications" (typing.yaml)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.services.sync.typing import DEFAULT_TIMEOUT_MS
from peyvand.types import RoomID, UserID

routes = RouteTable()


@routes.put(f"{CLIENT_V3}/rooms/{{roomId}}/typing/{{userId}}", rate_limited=True)
async def set_typing(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}: start typing for ``timeout``
    milliseconds, or stop (``timeout`` may then be omitted)."""
    body = await ctx.body()
    await ctx.services.typing.set_typing(
        ctx.user.user_id,
        UserID(ctx.path["userId"]),
        RoomID(ctx.path["roomId"]),
        body.bool("typing"),
        body.int("timeout", DEFAULT_TIMEOUT_MS),
    )
    return json_response({})
