"""Client-Server API, "Reporting content" (report_content.yaml): report an event, a room or
a user to this server's admins."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.types import EventID, RoomID, UserID

routes = RouteTable()


@routes.post(f"{CLIENT_V3}/rooms/{{roomId}}/report/{{eventId}}", rate_limited=True)
async def report_event(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}: ``{reason?, score?}``."""
    body = await ctx.body()
    reason = body.str("reason", "")
    # report_content.yaml: "-100 is most offensive and 0 is inoffensive".
    score = body.int("score", None, minimum=-100, maximum=0)
    await ctx.services.reports.report_event(
        ctx.user.user_id,
        RoomID(ctx.path["roomId"]),
        EventID(ctx.path["eventId"]),
        reason,
        score,
    )
    return json_response({})


@routes.post(f"{CLIENT_V3}/rooms/{{roomId}}/report", rate_limited=True)
async def report_room(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/rooms/{roomId}/report: ``{reason}`` (may be blank)."""
    body = await ctx.body()
    await ctx.services.reports.report_room(
        ctx.user.user_id, RoomID(ctx.path["roomId"]), body.str("reason")
    )
    return json_response({})


@routes.post(f"{CLIENT_V3}/users/{{userId}}/report", rate_limited=True)
async def report_user(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/users/{userId}/report: ``{reason}`` (may be blank)."""
    body = await ctx.body()
    await ctx.services.reports.report_user(
        ctx.user.user_id, UserID(ctx.path["userId"]), body.str("reason")
    )
    return json_response({})
