"""Client-Server API, "Forming relationships between events": the Relationships API."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.api.validation import query_bool, query_int
from peyvand.errors import Errcode, MatrixError
from peyvand.services.rooms.relations import DEFAULT_LIMIT, RelationsRequest
from peyvand.types import EventID, RoomID

CLIENT_V1 = "/_matrix/client/v1"
_RELATIONS = f"{CLIENT_V1}/rooms/{{roomId}}/relations/{{eventId}}"

routes = RouteTable()


async def _relations(
    ctx: RequestContext, rel_type: str | None = None, event_type: str | None = None
) -> web.Response:
    room_id, event_id = ctx.path["roomId"], ctx.path["eventId"]
    if not room_id.startswith("!"):
        raise MatrixError(Errcode.INVALID_PARAM, f"Invalid room ID: {room_id}")
    direction = ctx.query.get("dir", "b")
    if direction not in ("b", "f"):
        raise MatrixError(Errcode.INVALID_PARAM, "dir must be 'b' or 'f'")
    recurse = query_bool(ctx.query, "recurse", False) or query_bool(
        ctx.query, "org.matrix.msc3981.recurse", False
    )
    request = RelationsRequest(
        room_id=RoomID(room_id),
        event_id=EventID(event_id),
        rel_type=rel_type,
        event_type=event_type,
        from_token=ctx.query.get("from") or None,
        to_token=ctx.query.get("to") or None,
        limit=query_int(ctx.query, "limit", DEFAULT_LIMIT, minimum=0),
        backwards=direction == "b",
        recurse=recurse,
    )
    return json_response(await ctx.services.relations.relations(ctx.user, request))


@routes.get(_RELATIONS)
async def relations(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}"""
    return await _relations(ctx)


@routes.get(f"{_RELATIONS}/{{relType}}")
async def relations_of_type(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}"""
    return await _relations(ctx, ctx.path["relType"])


@routes.get(f"{_RELATIONS}/{{relType}}/{{eventType}}")
async def relations_of_type_and_event_type(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}"""
    return await _relations(ctx, ctx.path["relType"], ctx.path["eventType"])
