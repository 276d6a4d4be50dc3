"""Client-Server API, "Send-to-Device messaging" (to_device.yaml)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.services.e2ee.to_device import parse_messages

routes = RouteTable()


@routes.put(f"{CLIENT_V3}/sendToDevice/{{eventType}}/{{txnId}}", rate_limited=True)
async def send_to_device(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}: ``messages`` maps user IDs
    to device IDs (or ``*``) to contents; a retried txnId sends nothing new."""
    body = await ctx.body()
    messages = parse_messages(body.dict("messages"))
    await ctx.services.to_device.send(ctx.user, ctx.path["eventType"], ctx.path["txnId"], messages)
    return json_response({})
