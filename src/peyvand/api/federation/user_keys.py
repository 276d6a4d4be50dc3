"""Device lists and end-to-end keys for other servers (user_devices.yaml, user_keys.yaml)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.errors import Errcode, MatrixError

routes = RouteTable()

_V1 = "/_matrix/federation/v1"


@routes.get(f"{_V1}/user/devices/{{user_id}}", auth="federation")
async def user_devices(ctx: RequestContext) -> web.Response:
    """GET /_matrix/federation/v1/user/devices/{userId}: a local user's devices."""
    return json_response(
        await ctx.services.federation.edus.outbound_device_lists.user_devices(ctx.path["user_id"])
    )


@routes.post(f"{_V1}/user/keys/query", auth="federation")
async def query_keys(ctx: RequestContext) -> web.Response:
    """POST /_matrix/federation/v1/user/keys/query: local users' device and cross-signing
    keys."""
    device_keys = (await ctx.body()).dict("device_keys")
    query: dict[str, list[str]] = {}
    for user_id, device_ids in device_keys.items():
        if not isinstance(device_ids, list) or not all(isinstance(d, str) for d in device_ids):
            raise MatrixError(Errcode.BAD_JSON, "device_keys values must be lists of strings")
        query[user_id] = device_ids
    return json_response(await ctx.services.e2e_keys.federation_query_keys(query))


@routes.post(f"{_V1}/user/keys/claim", auth="federation")
async def claim_keys(ctx: RequestContext) -> web.Response:
    """POST /_matrix/federation/v1/user/keys/claim: one-time keys of local users' devices."""
    one_time_keys = (await ctx.body()).dict("one_time_keys")
    query: dict[str, dict[str, str]] = {}
    for user_id, devices in one_time_keys.items():
        if not isinstance(devices, dict) or not all(
            isinstance(d, str) and isinstance(a, str) for d, a in devices.items()
        ):
            raise MatrixError(
                Errcode.BAD_JSON, "one_time_keys values must map devices to algorithms"
            )
        query[user_id] = devices
    return json_response(await ctx.services.e2e_keys.federation_claim_keys(query))
