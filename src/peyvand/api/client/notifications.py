"""Client-Server API, "Push Notifications": "Listing notifications" (notifications.yaml)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.api.validation import query_int
from peyvand.services.push.notifications import DEFAULT_LIMIT

routes = RouteTable()


@routes.get(f"{CLIENT_V3}/notifications")
async def get_notifications(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/notifications?from&limit&only=highlight: the events that
    notified the user, newest first (``services.push.notifications``). A ``limit`` above
    the maximum is lowered to it; a negative one, or a ``from`` not handed out by this
    endpoint, is 400 M_INVALID_PARAM."""
    return json_response(
        await ctx.services.notifications.list(
            ctx.user,
            ctx.query.get("from") or None,
            query_int(ctx.query, "limit", DEFAULT_LIMIT, minimum=0),
            ctx.query.get("only"),
        )
    )
