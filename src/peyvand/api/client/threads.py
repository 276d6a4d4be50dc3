"""Client-Server API, "Threading": "Querying threads in a room" (threads_list.yaml)."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.api.validation import query_int
from peyvand.errors import invalid_param
from peyvand.services.rooms.threads import INCLUDE_ALL
from peyvand.types import JsonDict, RoomID

routes = RouteTable()

# threads_list.yaml: "Servers should apply a default value, and impose a maximum value";
# the default is Synapse's.
_DEFAULT_LIMIT: Final = 5
_MAX_LIMIT: Final = 100


@routes.get("/_matrix/client/v1/rooms/{roomId}/threads")
async def threads(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v1/rooms/{roomId}/threads?include=all|participated&limit&from:
    the room's thread roots, the latest active thread first. A ``limit`` above the
    maximum is lowered to it; one below 1 is 400 M_INVALID_PARAM."""
    room_id = ctx.path["roomId"]
    if not room_id.startswith("!"):
        raise invalid_param(f"Invalid room ID: {room_id}")
    limit = query_int(ctx.query, "limit", _DEFAULT_LIMIT, minimum=1)
    page = await ctx.services.threads.list_threads(
        ctx.user,
        RoomID(room_id),
        include=ctx.query.get("include", INCLUDE_ALL),
        limit=min(limit, _MAX_LIMIT),
        from_token=ctx.query.get("from") or None,
    )
    response: JsonDict = {"chunk": page.chunk}
    if page.next_batch is not None:
        response["next_batch"] = page.next_batch
    return json_response(response)
