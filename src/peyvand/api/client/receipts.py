"""Client-Server API, "Receipts" (receipts.yaml)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.errors import invalid_param
from peyvand.types import EventID, RoomID

routes = RouteTable()


@routes.post(f"{CLIENT_V3}/rooms/{{roomId}}/receipt/{{receiptType}}/{{eventId}}", rate_limited=True)
async def send_receipt(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}: move the
    requester's receipt (or, for ``m.fully_read``, fully read marker) to the event.

    A ``thread_id`` that is not a non-empty string is 400 M_INVALID_PARAM (receipts.yaml).
    """
    body = await ctx.body()
    thread_id = body.data.get("thread_id")
    if "thread_id" in body and (not isinstance(thread_id, str) or not thread_id):
        raise invalid_param("thread_id field must be a non-empty string")
    await ctx.services.receipts.send_receipt(
        ctx.user.user_id,
        RoomID(ctx.path["roomId"]),
        ctx.path["receiptType"],
        EventID(ctx.path["eventId"]),
        thread_id,
    )
    return json_response({})
