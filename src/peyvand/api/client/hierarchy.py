"""Client-Server API, "Spaces" (space_hierarchy.yaml): a page of a space's rooms that
the user may see, depth first. Rate-limited: a page may cost requests to other servers."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.api.validation import query_bool, query_int
from peyvand.errors import invalid_param
from peyvand.types import RoomID

routes = RouteTable()


@routes.get("/_matrix/client/v1/rooms/{roomId}/hierarchy", rate_limited=True)
async def hierarchy(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v1/rooms/{roomId}/hierarchy?suggested_only=&limit=&max_depth=&from="""
    query = ctx.query
    room_id = ctx.path["roomId"]
    if not room_id.startswith("!"):
        raise invalid_param("roomId must be a room ID")
    result = await ctx.services.space_hierarchy.client_hierarchy(
        ctx.user.user_id,
        RoomID(room_id),
        suggested_only=query_bool(query, "suggested_only", False),
        max_depth=query_int(query, "max_depth", -1, minimum=0) if "max_depth" in query else None,
        limit=query_int(query, "limit", 1, minimum=1) if "limit" in query else None,
        from_token=query.get("from"),
    )
    return json_response(result)
