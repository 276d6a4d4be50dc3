"""Server-Server API, "Retrieving server keys": publishing this server's keys
(keys_server.yaml) and answering notary queries for other servers' (keys_query.yaml).

None of these endpoints is authenticated: a server asks for keys before it can check any
signature.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.api.validation import query_int
from peyvand.errors import Errcode, MatrixError
from peyvand.types import ServerName

routes = RouteTable()

KEY_V2 = "/_matrix/key/v2"


@routes.get(f"{KEY_V2}/server", auth="none")
async def server_keys(ctx: RequestContext) -> web.Response:
    """GET /_matrix/key/v2/server: this server's signing keys, signed with them."""
    return json_response(ctx.services.keyring.own_server_keys())


@routes.get(f"{KEY_V2}/server/{{keyId}}", auth="none")
async def server_keys_by_id(ctx: RequestContext) -> web.Response:
    """GET /_matrix/key/v2/server/{keyId}: the deprecated form; the key ID is ignored and
    the whole key document answered, as Synapse does."""
    return json_response(ctx.services.keyring.own_server_keys())


@routes.get(f"{KEY_V2}/query/{{serverName}}", auth="none", rate_limited=True)
async def query_server(ctx: RequestContext) -> web.Response:
    """GET /_matrix/key/v2/query/{serverName}: the server's keys, valid until at least
    ``minimum_valid_until_ts`` (default now) when they can be had, signed by this server
    as a notary; ``server_keys`` is empty when none can."""
    minimum: int | None = None
    if ctx.query.get("minimum_valid_until_ts"):
        minimum = query_int(ctx.query, "minimum_valid_until_ts", 0)
    answers = await ctx.services.keyring.query_server_keys(
        {ServerName(ctx.path["serverName"]): {}}, minimum_valid_until_ts=minimum
    )
    return json_response({"server_keys": answers})


@routes.post(f"{KEY_V2}/query", auth="none", rate_limited=True)
async def query_servers(ctx: RequestContext) -> web.Response:
    """POST /_matrix/key/v2/query: several servers' keys at once.

    ``server_keys`` maps server names to the key IDs wanted (none: all keys), each with an
    optional ``minimum_valid_until_ts`` (default now)."""
    server_keys = (await ctx.body()).dict("server_keys")
    query: dict[ServerName, dict[str, int | None]] = {}
    for server_name, key_ids in server_keys.items():
        if not isinstance(key_ids, dict):
            raise MatrixError(Errcode.BAD_JSON, f"server_keys.{server_name} must be an object")
        query[ServerName(server_name)] = {
            key_id: _minimum_valid_until_ts(server_name, key_id, criteria)
            for key_id, criteria in key_ids.items()
        }
    answers = await ctx.services.keyring.query_server_keys(query)
    return json_response({"server_keys": answers})


def _minimum_valid_until_ts(server_name: str, key_id: str, criteria: Any) -> int | None:
    if not isinstance(criteria, dict):
        raise MatrixError(Errcode.BAD_JSON, f"server_keys.{server_name}.{key_id} must be an object")
    value = criteria.get("minimum_valid_until_ts")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise MatrixError(Errcode.BAD_JSON, "minimum_valid_until_ts must be an integer")
    return value
