"""Client-Server API, "Room aliases" and "Listing rooms" (the published room directory)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.public_rooms_query import query_from_body, query_from_params
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.errors import Errcode, MatrixError
from peyvand.types import RoomAlias, RoomID, ServerName

routes = RouteTable()


def _alias(ctx: RequestContext) -> RoomAlias:
    return RoomAlias(ctx.path["roomAlias"])


def _room_id(ctx: RequestContext) -> RoomID:
    room_id = ctx.path["roomId"]
    if not room_id.startswith("!"):
        raise MatrixError(Errcode.INVALID_PARAM, f"Invalid room ID: {room_id}")
    return RoomID(room_id)


@routes.put(f"{CLIENT_V3}/directory/room/{{roomAlias}}", rate_limited=True)
async def set_alias(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/directory/room/{roomAlias}"""
    room_id = (await ctx.body()).str("room_id")
    if not room_id.startswith("!"):
        raise MatrixError(Errcode.INVALID_PARAM, f"Invalid room ID: {room_id}")
    await ctx.services.directory.set_alias(ctx.user, _alias(ctx), RoomID(room_id))
    return json_response({})


@routes.get(f"{CLIENT_V3}/directory/room/{{roomAlias}}", auth="optional")
async def get_alias(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/directory/room/{roomAlias}"""
    return json_response(await ctx.services.directory.get_alias(_alias(ctx)))


@routes.delete(f"{CLIENT_V3}/directory/room/{{roomAlias}}")
async def delete_alias(ctx: RequestContext) -> web.Response:
    """DELETE /_matrix/client/v3/directory/room/{roomAlias}"""
    await ctx.services.directory.delete_alias(ctx.user, _alias(ctx))
    return json_response({})


@routes.get(f"{CLIENT_V3}/rooms/{{roomId}}/aliases")
async def room_aliases(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/rooms/{roomId}/aliases"""
    aliases = await ctx.services.directory.room_aliases(ctx.user, _room_id(ctx))
    return json_response({"aliases": aliases})


@routes.get(f"{CLIENT_V3}/directory/list/room/{{roomId}}", auth="optional")
async def get_visibility(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/directory/list/room/{roomId}"""
    visibility = await ctx.services.directory.get_visibility(_room_id(ctx))
    return json_response({"visibility": visibility})


@routes.put(f"{CLIENT_V3}/directory/list/room/{{roomId}}", rate_limited=True)
async def set_visibility(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/directory/list/room/{roomId}

    A missing ``visibility`` means ``public``, as in Synapse.
    """
    body = await ctx.body()
    visibility = body.one_of("visibility", ("public", "private"), "public")
    await ctx.services.directory.set_visibility(ctx.user, _room_id(ctx), visibility)
    return json_response({})


@routes.put(f"{CLIENT_V3}/directory/list/appservice/{{networkId}}/{{roomId}}")
async def set_appservice_visibility(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/directory/list/appservice/{networkId}/{roomId}
    (appservices only)"""
    visibility = (await ctx.body()).one_of("visibility", ("public", "private"))
    await ctx.services.directory.set_appservice_visibility(
        ctx.user, ctx.path["networkId"], _room_id(ctx), visibility
    )
    return json_response({})


@routes.delete(f"{CLIENT_V3}/directory/list/appservice/{{networkId}}/{{roomId}}")
async def delete_appservice_visibility(ctx: RequestContext) -> web.Response:
    """DELETE /_matrix/client/v3/directory/list/appservice/{networkId}/{roomId}: the room
    leaves the network's list, as a PUT with ``private`` (Synapse serves it; sytest uses it)."""
    await ctx.services.directory.set_appservice_visibility(
        ctx.user, ctx.path["networkId"], _room_id(ctx), "private"
    )
    return json_response({})


def _server(ctx: RequestContext) -> ServerName | None:
    """The server whose list is asked for (``?server=``); another server's list is only
    for authenticated users (Synapse: a request this server makes on their behalf)."""
    server = ctx.query.get("server") or None
    if server is not None and server != ctx.services.config.server_name and not ctx.requester:
        raise MatrixError(Errcode.MISSING_TOKEN, "Missing access token")
    return None if server is None else ServerName(server)


@routes.get(f"{CLIENT_V3}/publicRooms", auth="optional")
async def get_public_rooms(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/publicRooms: this server's list, or another's (``server``)"""
    query = query_from_params(ctx.query, federated_only=False)
    return json_response(await ctx.services.directory.public_rooms(query, _server(ctx)))


@routes.post(f"{CLIENT_V3}/publicRooms", rate_limited=True)
async def query_public_rooms(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/publicRooms: this server's list, or another's (``server``),
    filtered; ``third_party_instance_id`` or ``include_all_networks`` choose appservices'
    network lists."""
    query = query_from_body(await ctx.body(), federated_only=False)
    return json_response(await ctx.services.directory.public_rooms(query, _server(ctx)))
