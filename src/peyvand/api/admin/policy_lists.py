"""The moderation policy lists this server follows (docs/compliance.md, "Moderation policy
lists"): ``GET /_peyvand/admin/v1/policy_lists``, for server admins."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.admin.media import _admin
from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable

routes = RouteTable()


@routes.get("/_peyvand/admin/v1/policy_lists")
async def policy_lists(ctx: RequestContext) -> web.Response:
    """GET /_peyvand/admin/v1/policy_lists: ``{"policy_user", "rooms": [{"room",
    "room_id", "status" (pending, joined or failed), "rules", "error"?}], "counts":
    {"user", "server", "room"}, "rules": [{"kind", "entity", "recommendation", "reason",
    "room_id", "type", "state_key"}]}``: every ``m.ban`` rule in force."""
    _admin(ctx)
    return json_response(ctx.services.policy_lists.describe())
