"""Server-Server API, "Spaces" (space_hierarchy.yaml): a room's hierarchy one level
deep for another server, which both space browsing and room previews (MSC3266) ask for
when the asking server is not in the room."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.api.validation import query_bool
from peyvand.types import RoomID

routes = RouteTable()


@routes.get("/_matrix/federation/v1/hierarchy/{room_id}", auth="federation")
async def hierarchy(ctx: RequestContext) -> web.Response:
    """GET /_matrix/federation/v1/hierarchy/{roomId}?suggested_only=..."""
    result = await ctx.services.space_hierarchy.federation_hierarchy(
        ctx.origin,
        RoomID(ctx.path["room_id"]),
        query_bool(ctx.query, "suggested_only", False),
    )
    return json_response(result)
