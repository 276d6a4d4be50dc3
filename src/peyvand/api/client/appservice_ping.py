"""Client-Server API, "Application service ping" (v1.7): an appservice checks that the
homeserver reaches it (``POST /_matrix/client/v1/appservice/{appserviceId}/ping``)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable

routes = RouteTable()


@routes.post("/_matrix/client/v1/appservice/{appserviceId}/ping")
async def ping(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v1/appservice/{appserviceId}/ping {"transaction_id"?}"""
    transaction_id = (await ctx.body()).str("transaction_id", None)
    duration_ms = await ctx.services.appservice_ping.ping(
        ctx.user.appservice, ctx.path["appserviceId"], transaction_id
    )
    return json_response({"duration_ms": duration_ms})
