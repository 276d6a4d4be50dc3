"""Client-Server API, "Room aliases" and "Listing rooms" (the published room directory)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.api.validation import Body, query_int
from peyvand.errors import Errcode, MatrixError
from peyvand.services.directory import PublicRoomsQuery
from peyvand.types import RoomID

routes = RouteTable()


def _alias(ctx: RequestContext) -> str:
    return unquote(ctx.path["roomAlias"])


def _room_id(ctx: RequestContext) -> RoomID:
    room_id = unquote(ctx.path["roomId"])
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


def _check_server(ctx: RequestContext, query: Mapping[str, str]) -> None:
    server = query.get("server")
    if server and server != ctx.services.config.server_name:
        raise MatrixError(
            Errcode.INVALID_PARAM, "Other servers' room directories are not available"
        )


@routes.get(f"{CLIENT_V3}/publicRooms", auth="optional")
async def get_public_rooms(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/publicRooms (a ``limit`` of 0 means no limit, as in Synapse)"""
    _check_server(ctx, ctx.query)
    query = PublicRoomsQuery(
        limit=query_int(ctx.query, "limit", 0) or None,
        since=ctx.query.get("since") or None,
    )
    return json_response(await ctx.services.directory.public_rooms(query))


@routes.post(f"{CLIENT_V3}/publicRooms", rate_limited=True)
async def query_public_rooms(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/publicRooms

    ``include_all_networks`` and ``third_party_instance_id`` are accepted and ignored:
    this server has no bridged networks.
    """
    _check_server(ctx, ctx.query)
    body = await ctx.body()
    search = Body(body.dict("filter", {}))
    room_types: list[Any] | None = search.list("room_types", None)
    if room_types is not None and not all(t is None or isinstance(t, str) for t in room_types):
        raise MatrixError(Errcode.BAD_JSON, "'room_types' must be an array of strings or null")
    limit = body.int("limit", None)
    if limit is not None and limit < 0:
        raise MatrixError(Errcode.INVALID_PARAM, "'limit' must not be negative")
    query = PublicRoomsQuery(
        limit=limit or None,
        since=body.str("since", None),
        search_term=search.str("generic_search_term", None),
        room_types=room_types,
    )
    return json_response(await ctx.services.directory.public_rooms(query))
