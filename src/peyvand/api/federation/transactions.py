"""Transactions (Server-Server API, "Transactions"; transactions.yaml)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable

routes = RouteTable()


@routes.put("/_matrix/federation/v1/send/{txn_id}", auth="federation")
async def send_transaction(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/federation/v1/send/{txnId}: PDUs and EDUs from another server."""
    # Each PDU and EDU is checked on its own: one bad item never costs the others.
    body = await ctx.raw_json(items_checked_apart=True)
    transactions = ctx.services.federation.transactions
    result = await transactions.on_transaction(ctx.origin, ctx.path["txn_id"], body)
    return json_response(result)
