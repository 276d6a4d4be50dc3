"""Client-Server API, "End-to-End Encryption": key upload, query and claim (keys.yaml)
and cross-signing (cross_signing.yaml). ``/keys/changes`` lives with the device lists."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.errors import Errcode, MatrixError
from peyvand.services.appservice.auth import NO_DEVICE

routes = RouteTable()


def _map_of(value: Any, key: str, item_ok: type | tuple[type, ...]) -> dict[str, Any]:
    """``{user_id: ...}`` whose values are of ``item_ok``; M_BAD_JSON otherwise."""
    if not isinstance(value, dict) or not all(isinstance(v, item_ok) for v in value.values()):
        raise MatrixError(Errcode.BAD_JSON, f"'{key}' must map user IDs to the right type")
    return value


@routes.post(f"{CLIENT_V3}/keys/upload")
async def upload_keys(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/keys/upload: publish the device's identity, one-time and
    fallback keys ("Uploading keys"); answers the one-time key counts. An application
    service must name the device (Application Service API, "Identity assertion")."""
    if ctx.user.device_id == NO_DEVICE:
        raise MatrixError(
            Errcode.UNKNOWN, "To upload keys, you must pass device_id when authenticating"
        )
    body = await ctx.body()
    counts = await ctx.services.e2e_keys.upload_keys(ctx.user, body.data)
    return json_response({"one_time_key_counts": counts})


@routes.post(f"{CLIENT_V3}/keys/query")
async def query_keys(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/keys/query: the device and cross-signing keys of users
    ("Downloading keys"); remote servers are reported under ``failures``."""
    body = await ctx.body()
    query = _map_of(body.dict("device_keys"), "device_keys", list)
    if not all(isinstance(d, str) for devices in query.values() for d in devices):
        raise MatrixError(Errcode.BAD_JSON, "'device_keys' must map user IDs to device IDs")
    result = await ctx.services.e2e_keys.query_keys(ctx.user, query)
    return json_response(result)


@routes.post(f"{CLIENT_V3}/keys/claim")
async def claim_keys(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/keys/claim: one one-time key (else the fallback key) per
    device and algorithm ("Claiming one-time keys"); ``timeout`` is not needed locally."""
    body = await ctx.body()
    query = _map_of(body.dict("one_time_keys"), "one_time_keys", dict)
    if not all(isinstance(a, str) for devices in query.values() for a in devices.values()):
        raise MatrixError(Errcode.BAD_JSON, "'one_time_keys' must map devices to algorithms")
    return json_response(await ctx.services.e2e_keys.claim_keys(query))


# The unstable paths of MSC1756, which Synapse still serves and sytest uses.
_UNSTABLE = "/_matrix/client/unstable"


@routes.post(f"{CLIENT_V3}/keys/device_signing/upload")
@routes.post(f"{_UNSTABLE}/keys/device_signing/upload")
async def upload_cross_signing_keys(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/keys/device_signing/upload: publish cross-signing keys
    ("Cross-signing"), after UIA unless nothing is replaced."""
    body = await ctx.body()
    await ctx.services.e2e_keys.upload_cross_signing_keys(ctx.user, body.data)
    return json_response({})


@routes.post(f"{CLIENT_V3}/keys/signatures/upload")
@routes.post(f"{_UNSTABLE}/keys/signatures/upload")
async def upload_signatures(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/keys/signatures/upload: publish cross-signing signatures;
    those that do not verify come back under ``failures``."""
    body = await ctx.body()
    return json_response(await ctx.services.e2e_keys.upload_signatures(ctx.user, body.data))
