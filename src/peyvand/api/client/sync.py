"""Client-Server API, "Syncing": GET /sync."""

from __future__ import annotations

import logging

from aiohttp import web

from peyvand.api.context import RequestContext, json_response, send_now
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.api.validation import query_bool, query_int
from peyvand.errors import Errcode, MatrixError
from peyvand.services.sync.filtering import NO_FILTER, Filter, parse_filter, parse_filter_param
from peyvand.services.sync.notifier import ClientGone, abandoned_when
from peyvand.services.sync.streams import StreamToken

logger = logging.getLogger(__name__)

routes = RouteTable()

MAX_TIMEOUT_MS = 5 * 60 * 1000
# MSC4222's name for v1.16's ``use_state_after`` and ``state_after``, which Synapse
# 1.163 serves and matrix-js-sdk asks for on every sync.
UNSTABLE_USE_STATE_AFTER = "org.matrix.msc4222.use_state_after"
UNSTABLE_STATE_AFTER = "org.matrix.msc4222.state_after"


@routes.get(f"{CLIENT_V3}/sync")
async def sync(ctx: RequestContext) -> web.StreamResponse:
    """GET /_matrix/client/v3/sync"""
    query = ctx.query
    since = query.get("since")
    set_presence = query.get("set_presence", "online")
    if set_presence not in ("online", "offline", "unavailable"):
        raise MatrixError(Errcode.INVALID_PARAM, "Invalid set_presence")
    sync_filter: Filter = NO_FILTER
    if raw := query.get("filter"):
        parsed = parse_filter_param(raw)
        if isinstance(parsed, str):
            stored = await ctx.services.auth.get_filter(ctx.user.user_id, parsed)
            if stored is None:
                # The spec names no error; Synapse answers 400 M_INVALID_PARAM.
                raise MatrixError(Errcode.INVALID_PARAM, "No such filter")
            parsed = parse_filter(stored)
        sync_filter = parsed
    # v1.16 "use_state_after": each room's state at the end of its timeline, under the
    # name the client asked with.
    stable = query_bool(query, "use_state_after", False)
    unstable = not stable and query_bool(query, UNSTABLE_USE_STATE_AFTER, False)
    try:
        with abandoned_when(lambda: client_gone(ctx.request)):
            async with ctx.services.presence.syncing(ctx.user.user_id, set_presence):
                result = await ctx.services.sync.sync(
                    ctx.user,
                    StreamToken.parse(since) if since else None,
                    sync_filter=sync_filter,
                    timeout_ms=query_int(query, "timeout", 0) if since else 0,
                    full_state=query_bool(query, "full_state", False),
                    state_after=stable or unstable,
                )
    except ClientGone:
        return abandoned(ctx)
    if unstable:
        for section in ("join", "leave"):
            for room in result["rooms"][section].values():
                room[UNSTABLE_STATE_AFTER] = room.pop("state_after")
    return await send_now(ctx.request, json_response(result))


def client_gone(request: web.Request) -> bool:
    """Whether the connection ``request`` came on has closed (the client went away).

    aiohttp cancels no handler on a disconnect (``handler_cancellation`` is off, so that
    sends and uploads are never cut mid-way); long-polls ask this instead."""
    transport = request.transport
    return transport is None or transport.is_closing()


def abandoned(ctx: RequestContext) -> web.Response:
    """What a long-poll whose client went away returns: nothing anyone will read."""
    logger.debug("long-poll of %s abandoned: its client disconnected", ctx.user.user_id)
    return web.Response(status=499)
