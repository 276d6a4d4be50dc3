"""Client-Server API "Voice over IP" (voip.yaml): TURN credentials for calls."""

from __future__ import annotations

import time

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.errors import Errcode, MatrixError
from peyvand.services.calls.turn import turn_credentials

routes = RouteTable()


@routes.get(f"{CLIENT_V3}/voip/turnServer", rate_limited=True)
async def turn_server(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/voip/turnServer: credentials for the configured TURN server;
    ``{}`` when none is configured, as Synapse. Guests get them unless
    ``voip.turn_allow_guests`` is off."""
    config = ctx.services.config.voip
    if ctx.user.is_guest and not config.turn_allow_guests:
        raise MatrixError(Errcode.GUEST_ACCESS_FORBIDDEN, "Guest access is not allowed here")
    credentials = turn_credentials(config, ctx.user.user_id, time.time())
    return json_response({} if credentials is None else credentials.to_json())
