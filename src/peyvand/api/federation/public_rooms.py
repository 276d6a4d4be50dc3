"""Server-Server API, "Public Room Directory" (public_rooms.yaml): this server's published
rooms that federate, for other servers to show their users."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.public_rooms_query import query_from_body, query_from_params
from peyvand.api.routing import RouteTable

routes = RouteTable()

_PATH = "/_matrix/federation/v1/publicRooms"


@routes.get(_PATH, auth="federation")
async def get_public_rooms(ctx: RequestContext) -> web.Response:
    """GET /_matrix/federation/v1/publicRooms?limit=&since=: a page of the list."""
    query = query_from_params(ctx.query, federated_only=True)
    return json_response(await ctx.services.directory.public_rooms(query))


@routes.post(_PATH, auth="federation")
async def query_public_rooms(ctx: RequestContext) -> web.Response:
    """POST /_matrix/federation/v1/publicRooms: a page of the list, filtered."""
    query = query_from_body(await ctx.body(), federated_only=True)
    return json_response(await ctx.services.directory.public_rooms(query))
