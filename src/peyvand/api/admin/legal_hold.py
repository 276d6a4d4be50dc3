"""Legal holds (docs/compliance.md): place, list, read and release them.

Every endpoint needs a server admin's access token (``peyvand register-user --admin``);
placing and releasing a hold are recorded in the audit log.
"""

from __future__ import annotations

from aiohttp import web

from peyvand.api.admin.media import _admin
from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.api.validation import query_bool
from peyvand.compliance.legal_hold import KINDS, hold_json

routes = RouteTable()

_ADMIN = "/_peyvand/admin/v1"


@routes.post(f"{_ADMIN}/legal_holds")
async def place_hold(ctx: RequestContext) -> web.Response:
    """POST /_peyvand/admin/v1/legal_holds: place a hold. Body: ``kind`` (``user`` or
    ``room``), ``target`` (a user ID or room ID), ``case_id``, ``reason`` and optionally
    ``since_ts`` / ``until_ts`` (milliseconds, inclusive) to hold only the events sent in
    that range. Answers the hold."""
    admin = _admin(ctx)
    body = await ctx.body()
    hold = await ctx.services.legal_holds.place(
        admin.user_id,
        body.one_of("kind", KINDS),
        body.str("target"),
        body.str("case_id"),
        body.str("reason"),
        since_ts=body.int("since_ts", None),
        until_ts=body.int("until_ts", None),
    )
    return json_response(hold_json(hold))


@routes.get(f"{_ADMIN}/legal_holds")
async def list_holds(ctx: RequestContext) -> web.Response:
    """GET /_peyvand/admin/v1/legal_holds[?all=true]: the active holds (with ``all``,
    released ones too), oldest first, as ``{"holds": [...]}``."""
    _admin(ctx)
    active_only = not query_bool(ctx.query, "all", False)
    holds = await ctx.services.legal_holds.list(active_only)
    return json_response({"holds": [hold_json(h) for h in holds]})


@routes.get(f"{_ADMIN}/legal_holds/{{hold_id}}")
async def get_hold(ctx: RequestContext) -> web.Response:
    """GET /_peyvand/admin/v1/legal_holds/{holdId}: one hold, released or not; 404
    ``M_NOT_FOUND`` if there is none with this ID."""
    _admin(ctx)
    hold = await ctx.services.legal_holds.get(ctx.path["hold_id"])
    return json_response(hold_json(hold))


@routes.post(f"{_ADMIN}/legal_holds/{{hold_id}}/release")
async def release_hold(ctx: RequestContext) -> web.Response:
    """POST /_peyvand/admin/v1/legal_holds/{holdId}/release: release an active hold.
    Body: ``reason``. Answers the released hold; 404 ``M_NOT_FOUND`` if there is no such
    hold or it was released already."""
    admin = _admin(ctx)
    body = await ctx.body()
    hold = await ctx.services.legal_holds.release(
        admin.user_id, ctx.path["hold_id"], body.str("reason")
    )
    return json_response(hold_json(hold))
