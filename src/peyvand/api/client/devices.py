"""Client-Server API, "Device Management" (device_management.yaml)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.services.accounts.auth import Device
from peyvand.types import JsonDict

routes = RouteTable()


def _device_json(device: Device) -> JsonDict:
    body: JsonDict = {"device_id": device.device_id}
    if device.display_name is not None:
        body["display_name"] = device.display_name
    if device.last_seen_ip is not None:
        body["last_seen_ip"] = device.last_seen_ip
    if device.last_seen_ts is not None:
        body["last_seen_ts"] = device.last_seen_ts
    return body


@routes.get(f"{CLIENT_V3}/devices")
async def list_devices(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/devices: every device of the user."""
    devices = await ctx.services.auth.get_devices(ctx.user.user_id)
    return json_response({"devices": [_device_json(d) for d in devices]})


@routes.get(f"{CLIENT_V3}/devices/{{deviceId}}")
async def get_device(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/devices/{deviceId}: one device, 404 if unknown."""
    device = await ctx.services.auth.get_device(ctx.user.user_id, ctx.path["deviceId"])
    return json_response(_device_json(device))


@routes.put(f"{CLIENT_V3}/devices/{{deviceId}}")
async def update_device(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/devices/{deviceId}: rename a device, 404 if unknown; without
    ``display_name`` the name is unchanged. An application service creates the device if
    it does not exist, answering 201 (Application Service API, "Device management", spec
    v1.17 and MSC4190)."""
    body = await ctx.body()
    display_name = body.str("display_name", None)
    user_id, device_id = ctx.user.user_id, ctx.path["deviceId"]
    if ctx.user.appservice is not None:
        created = await ctx.services.auth.upsert_device(user_id, device_id, display_name)
        return json_response({}, status=201 if created else 200)
    if display_name is None:
        # Nothing to change, but an unknown device is still 404.
        await ctx.services.auth.get_device(user_id, device_id)
    else:
        await ctx.services.auth.rename_device(user_id, device_id, display_name)
    return json_response({})


@routes.delete(f"{CLIENT_V3}/devices/{{deviceId}}")
async def delete_device(ctx: RequestContext) -> web.Response:
    """DELETE /_matrix/client/v3/devices/{deviceId}: log a device out and delete it, after
    UIA with the account password (none for an application service)."""
    device_id = ctx.path["deviceId"]
    body = await ctx.body()
    await _require_password_unless_appservice(
        ctx, body.dict("auth", None), f"DELETE /devices/{device_id}"
    )
    await ctx.services.auth.delete_devices(ctx.user.user_id, [device_id])
    return json_response({})


@routes.post(f"{CLIENT_V3}/delete_devices")
async def delete_devices(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/delete_devices: delete several devices, after UIA with the
    account password (none for an application service)."""
    body = await ctx.body()
    device_ids = body.str_list("devices")
    await _require_password_unless_appservice(ctx, body.dict("auth", None), "POST /delete_devices")
    await ctx.services.auth.delete_devices(ctx.user.user_id, device_ids)
    return json_response({})


async def _require_password_unless_appservice(
    ctx: RequestContext, auth: Mapping[str, Any] | None, operation: str
) -> None:
    """UIA with the account password, which deleting devices "MUST NOT require" of an
    application service (Application Service API, "Deleting devices")."""
    if ctx.user.appservice is None:
        await ctx.services.auth.require_password(ctx.user, auth, operation)
