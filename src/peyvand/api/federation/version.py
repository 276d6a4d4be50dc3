"""GET /_matrix/federation/v1/version (version.yaml)."""

from __future__ import annotations

from aiohttp import web

from peyvand import __version__
from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable

routes = RouteTable()


@routes.get("/_matrix/federation/v1/version", auth="none")
async def version(ctx: RequestContext) -> web.Response:
    """GET /_matrix/federation/v1/version: this server's name and version."""
    return json_response({"server": {"name": "Peyvand", "version": __version__}})
