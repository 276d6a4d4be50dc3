"""Client-Server API, "End-to-End Encryption": ``GET /keys/changes`` (keys.yaml)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.errors import missing_param
from peyvand.services.sync.streams import StreamToken

routes = RouteTable()


@routes.get(f"{CLIENT_V3}/keys/changes")
async def keys_changes(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/keys/changes?from=&to=: users sharing a room with the caller
    whose devices changed between two sync tokens (``changed``), and users who no longer
    share a room with them (``left``)."""
    raw_from = ctx.query.get("from")
    if not raw_from:
        raise missing_param("Missing parameter: from")
    raw_to = ctx.query.get("to")
    changes = await ctx.services.device_lists.keys_changes(
        ctx.user.user_id,
        StreamToken.parse(raw_from),
        StreamToken.parse(raw_to) if raw_to else None,
    )
    return json_response(changes.to_json())
