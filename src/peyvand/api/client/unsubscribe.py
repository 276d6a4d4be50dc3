"""The unsubscribe link of notification emails (a Peyvand endpoint, not in the spec; as
Synapse's ``/_synapse/client/unsubscribe``): ``services.push.email.unsubscribe``."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext
from peyvand.api.routing import RouteTable
from peyvand.errors import missing_param
from peyvand.services.push.email.unsubscribe import UNSUBSCRIBE_PATH, EmailPusherKey
from peyvand.types import UserID

routes = RouteTable()

_DONE = (
    "<!DOCTYPE html><html><head><title>Unsubscribed</title></head>"
    "<body><p>You will no longer receive these notification emails.</p></body></html>"
)


@routes.get(UNSUBSCRIBE_PATH, auth="none", rate_limited=True)
@routes.post(UNSUBSCRIBE_PATH, auth="none", rate_limited=True)
async def unsubscribe(ctx: RequestContext) -> web.Response:
    """GET or POST (one-click, RFC 8058) /_peyvand/client/unsubscribe?user_id&app_id
    &pushkey&token: delete the email pusher the link was made for; 403 M_FORBIDDEN for a
    token this server did not make."""
    values = []
    for name in ("user_id", "app_id", "pushkey", "token"):
        value = ctx.query.get(name)
        if not value:
            raise missing_param(f"Missing parameter: {name}")
        values.append(value)
    user_id, app_id, pushkey, token = values
    pusher = EmailPusherKey(UserID(user_id), app_id, pushkey)
    await ctx.services.email_unsubscribe.unsubscribe(pusher, token)
    return web.Response(text=_DONE, content_type="text/html")
