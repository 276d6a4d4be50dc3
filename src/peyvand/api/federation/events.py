"""Reading a room's events and state over federation (events.yaml, event_auth.yaml,
backfill.yaml)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.api.validation import query_int
from peyvand.errors import Errcode, MatrixError
from peyvand.types import EventID, RoomID

routes = RouteTable()

_V1 = "/_matrix/federation/v1"


def _event_id_query(ctx: RequestContext) -> EventID:
    event_id = ctx.query.get("event_id")
    if not event_id:
        raise MatrixError(Errcode.MISSING_PARAM, "Missing 'event_id' query parameter")
    return EventID(event_id)


@routes.get(f"{_V1}/event/{{event_id}}", auth="federation")
async def get_event(ctx: RequestContext) -> web.Response:
    """GET /_matrix/federation/v1/event/{eventId}."""
    event_id = EventID(ctx.path["event_id"])
    result = await ctx.services.federation.reads.get_event(ctx.origin, event_id)
    return json_response(result)


@routes.get(f"{_V1}/state_ids/{{room_id}}", auth="federation")
async def state_ids(ctx: RequestContext) -> web.Response:
    """GET /_matrix/federation/v1/state_ids/{roomId}?event_id=..."""
    result = await ctx.services.federation.reads.state_ids(
        ctx.origin, RoomID(ctx.path["room_id"]), _event_id_query(ctx)
    )
    return json_response(result)


@routes.get(f"{_V1}/state/{{room_id}}", auth="federation")
async def state(ctx: RequestContext) -> web.Response:
    """GET /_matrix/federation/v1/state/{roomId}?event_id=..."""
    result = await ctx.services.federation.reads.state(
        ctx.origin, RoomID(ctx.path["room_id"]), _event_id_query(ctx)
    )
    return json_response(result)


@routes.get(f"{_V1}/event_auth/{{room_id}}/{{event_id}}", auth="federation")
async def event_auth(ctx: RequestContext) -> web.Response:
    """GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}."""
    result = await ctx.services.federation.reads.event_auth(
        ctx.origin, RoomID(ctx.path["room_id"]), EventID(ctx.path["event_id"])
    )
    return json_response(result)


@routes.post(f"{_V1}/get_missing_events/{{room_id}}", auth="federation")
async def get_missing_events(ctx: RequestContext) -> web.Response:
    """POST /_matrix/federation/v1/get_missing_events/{roomId}."""
    body = await ctx.body()
    result = await ctx.services.federation.reads.get_missing_events(
        ctx.origin,
        RoomID(ctx.path["room_id"]),
        body.str_list("earliest_events", []),
        body.str_list("latest_events"),
        body.int("limit", 10),
        body.int("min_depth", 0),
    )
    return json_response(result)


@routes.get(f"{_V1}/backfill/{{room_id}}", auth="federation")
async def backfill(ctx: RequestContext) -> web.Response:
    """GET /_matrix/federation/v1/backfill/{roomId}?v=...&limit=..."""
    starting = ctx.request.query.getall("v", [])
    if not starting:
        raise MatrixError(Errcode.MISSING_PARAM, "Missing 'v' query parameter")
    result = await ctx.services.federation.reads.backfill(
        ctx.origin,
        RoomID(ctx.path["room_id"]),
        starting,
        query_int(ctx.query, "limit", 10, minimum=1),
    )
    return json_response(result)
