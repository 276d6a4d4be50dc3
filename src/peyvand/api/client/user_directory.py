"""Client-Server API, "User directory"."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable

routes = RouteTable()

# Synapse clamps ``limit`` to 0..50.
MAX_LIMIT = 50


@routes.post(f"{CLIENT_V3}/user_directory/search", rate_limited=True)
async def search(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/user_directory/search"""
    body = await ctx.body()
    limit = max(0, min(body.int("limit", 10), MAX_LIMIT))
    result = await ctx.services.user_directory.search(
        ctx.user.user_id, body.str("search_term"), limit
    )
    return json_response(result)
