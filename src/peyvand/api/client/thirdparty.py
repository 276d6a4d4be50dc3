"""Client-Server API, "Third-party Lookup": the networks that bridges (application
services) connect, and their users and locations, answered by those bridges."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.errors import Errcode, MatrixError
from peyvand.services.appservice.thirdparty import ThirdPartyKind

routes = RouteTable()

_PREFIX = f"{CLIENT_V3}/thirdparty"
# The Matrix ID a reverse lookup is of (required by the spec).
_REVERSE_FIELD: dict[ThirdPartyKind, str] = {"location": "alias", "user": "userid"}


def _fields(ctx: RequestContext) -> dict[str, str]:
    """The query string passed on to the bridges, but for the client's token."""
    return {k: v for k, v in ctx.query.items() if k != "access_token"}


@routes.get(f"{_PREFIX}/protocols")
async def get_protocols(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/thirdparty/protocols"""
    return json_response(await ctx.services.thirdparty.protocols())


@routes.get(f"{_PREFIX}/protocol/{{protocol}}")
async def get_protocol(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/thirdparty/protocol/{protocol}"""
    return json_response(await ctx.services.thirdparty.protocol(ctx.path["protocol"]))


async def _lookup(ctx: RequestContext, kind: ThirdPartyKind) -> web.Response:
    protocol = ctx.path.get("protocol")
    fields = _fields(ctx)
    if protocol is None and _REVERSE_FIELD[kind] not in fields:
        raise MatrixError(Errcode.MISSING_PARAM, f"Missing '{_REVERSE_FIELD[kind]}'")
    return json_response(await ctx.services.thirdparty.lookup(kind, protocol, fields))


@routes.get(f"{_PREFIX}/location/{{protocol}}")
async def get_location(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/thirdparty/location/{protocol}"""
    return await _lookup(ctx, "location")


@routes.get(f"{_PREFIX}/user/{{protocol}}")
async def get_user(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/thirdparty/user/{protocol}"""
    return await _lookup(ctx, "user")


@routes.get(f"{_PREFIX}/location")
async def get_location_by_alias(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/thirdparty/location?alias="""
    return await _lookup(ctx, "location")


@routes.get(f"{_PREFIX}/user")
async def get_user_by_id(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/thirdparty/user?userid="""
    return await _lookup(ctx, "user")
