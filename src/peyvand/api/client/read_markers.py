"""Client-Server API, "Read and unread markers" (read_markers.yaml)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.types import EventID, RoomID

routes = RouteTable()


def _event_id(value: str | None) -> EventID | None:
    return EventID(value) if value else None


@routes.post(f"{CLIENT_V3}/rooms/{{roomId}}/read_markers", rate_limited=True)
async def set_read_markers(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/rooms/{roomId}/read_markers: move the fully read marker and,
    optionally, the ``m.read`` / ``m.read.private`` receipts in one request. Other keys are
    ignored, as Synapse does (receipt types stay extensible)."""
    body = await ctx.body()
    await ctx.services.receipts.set_read_markers(
        ctx.user.user_id,
        RoomID(ctx.path["roomId"]),
        fully_read=_event_id(body.str("m.fully_read", None)),
        read=_event_id(body.str("m.read", None)),
        read_private=_event_id(body.str("m.read.private", None)),
    )
    return json_response({})
