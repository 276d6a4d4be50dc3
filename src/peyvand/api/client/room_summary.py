"""Client-Server API, "Room summaries" (room_summary.yaml; MSC3266): a room's preview
for invites and links, for members, would-be members and (for rooms open to all)
unauthenticated clients. Also under MSC3266's unstable paths, as Synapse serves them.
Rate-limited (per user, else per address): a summary may cost requests to other servers."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable

routes = RouteTable()

_UNSTABLE = "/_matrix/client/unstable/im.nheko.summary"


async def _summary(ctx: RequestContext) -> web.Response:
    user_id = ctx.requester.user_id if ctx.requester is not None else None
    result = await ctx.services.room_summary.summary(
        user_id, ctx.path["roomIdOrAlias"], ctx.request.query.getall("via", [])
    )
    return json_response(result)


@routes.get("/_matrix/client/v1/room_summary/{roomIdOrAlias}", auth="optional", rate_limited=True)
async def room_summary(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v1/room_summary/{roomIdOrAlias}?via=..."""
    return await _summary(ctx)


@routes.get(f"{_UNSTABLE}/summary/{{roomIdOrAlias}}", auth="optional", rate_limited=True)
async def unstable_room_summary(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/unstable/im.nheko.summary/summary/{roomIdOrAlias}"""
    return await _summary(ctx)


@routes.get(f"{_UNSTABLE}/rooms/{{roomIdOrAlias}}/summary", auth="optional", rate_limited=True)
async def deprecated_room_summary(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/unstable/im.nheko.summary/rooms/{roomIdOrAlias}/summary
    (MSC3266's first path, deprecated)."""
    return await _summary(ctx)
