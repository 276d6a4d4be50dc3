"""Client-Server API, "Server-side key backups" (key_backup.yaml)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.errors import missing_param

routes = RouteTable()

_VERSION = f"{CLIENT_V3}/room_keys/version"
_KEYS = f"{CLIENT_V3}/room_keys/keys"


def _version_param(ctx: RequestContext) -> str:
    """The required ``version`` query parameter of the key endpoints."""
    version = ctx.query.get("version")
    if version is None:
        raise missing_param("Missing parameter: version")
    return version


# -- versions -----------------------------------------------------------------------------


@routes.post(_VERSION)
async def create_version(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/room_keys/version: ``{"version"}`` of the new backup, which
    becomes the current one."""
    body = await ctx.body()
    version = await ctx.services.key_backup.create_version(
        ctx.user.user_id, body.str("algorithm"), body.dict("auth_data")
    )
    return json_response({"version": version})


@routes.get(_VERSION)
async def get_current_version(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/room_keys/version: the current backup, 404 if none."""
    return json_response(await ctx.services.key_backup.get_version(ctx.user.user_id, None))


@routes.get(f"{_VERSION}/{{version}}")
async def get_version(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/room_keys/version/{version}: 404 if unknown or deleted."""
    info = await ctx.services.key_backup.get_version(ctx.user.user_id, ctx.path["version"])
    return json_response(info)


@routes.put(f"{_VERSION}/{{version}}")
async def update_version(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/room_keys/version/{version}: replaces ``auth_data``."""
    body = await ctx.body()
    await ctx.services.key_backup.update_version(
        ctx.user.user_id,
        ctx.path["version"],
        body.str("algorithm"),
        body.dict("auth_data"),
        body.str("version", None),
    )
    return json_response({})


@routes.delete(f"{_VERSION}/{{version}}")
async def delete_version(ctx: RequestContext) -> web.Response:
    """DELETE /_matrix/client/v3/room_keys/version/{version}: the backup and its keys."""
    await ctx.services.key_backup.delete_version(ctx.user.user_id, ctx.path["version"])
    return json_response({})


# -- keys ---------------------------------------------------------------------------------


@routes.put(_KEYS)
async def put_keys(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/room_keys/keys?version=: ``{"rooms": {roomId: {"sessions":
    {...}}}}`` into the current backup; answers ``{"etag", "count"}``."""
    body = await ctx.body()
    result = await ctx.services.key_backup.upload_keys(
        ctx.user.user_id, _version_param(ctx), body.dict("rooms")
    )
    return json_response(result)


@routes.get(_KEYS)
async def get_keys(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/room_keys/keys?version=: every key of the backup."""
    keys = await ctx.services.key_backup.get_all_keys(ctx.user.user_id, _version_param(ctx))
    return json_response(keys)


@routes.delete(_KEYS)
async def delete_keys(ctx: RequestContext) -> web.Response:
    """DELETE /_matrix/client/v3/room_keys/keys?version=: every key of the backup."""
    result = await ctx.services.key_backup.delete_keys(ctx.user.user_id, _version_param(ctx))
    return json_response(result)


@routes.put(f"{_KEYS}/{{roomId}}")
async def put_room_keys(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/room_keys/keys/{roomId}?version=: ``{"sessions": {...}}``."""
    body = await ctx.body()
    rooms = {ctx.path["roomId"]: {"sessions": body.dict("sessions")}}
    result = await ctx.services.key_backup.upload_keys(ctx.user.user_id, _version_param(ctx), rooms)
    return json_response(result)


@routes.get(f"{_KEYS}/{{roomId}}")
async def get_room_keys(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/room_keys/keys/{roomId}?version=: ``{"sessions": {...}}``,
    empty when the room has no keys."""
    keys = await ctx.services.key_backup.get_room_keys(
        ctx.user.user_id, _version_param(ctx), ctx.path["roomId"]
    )
    return json_response(keys)


@routes.delete(f"{_KEYS}/{{roomId}}")
async def delete_room_keys(ctx: RequestContext) -> web.Response:
    """DELETE /_matrix/client/v3/room_keys/keys/{roomId}?version=: the room's keys."""
    result = await ctx.services.key_backup.delete_keys(
        ctx.user.user_id, _version_param(ctx), ctx.path["roomId"]
    )
    return json_response(result)


@routes.put(f"{_KEYS}/{{roomId}}/{{sessionId}}")
async def put_session_key(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}?version=: the body is
    one ``KeyBackupData``."""
    body = await ctx.body()
    rooms = {ctx.path["roomId"]: {"sessions": {ctx.path["sessionId"]: body.data}}}
    result = await ctx.services.key_backup.upload_keys(ctx.user.user_id, _version_param(ctx), rooms)
    return json_response(result)


@routes.get(f"{_KEYS}/{{roomId}}/{{sessionId}}")
async def get_session_key(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}?version=: the key data,
    404 M_NOT_FOUND if the session has none."""
    key = await ctx.services.key_backup.get_session_key(
        ctx.user.user_id, _version_param(ctx), ctx.path["roomId"], ctx.path["sessionId"]
    )
    return json_response(key)


@routes.delete(f"{_KEYS}/{{roomId}}/{{sessionId}}")
async def delete_session_key(ctx: RequestContext) -> web.Response:
    """DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}?version=: one key."""
    result = await ctx.services.key_backup.delete_keys(
        ctx.user.user_id, _version_param(ctx), ctx.path["roomId"], ctx.path["sessionId"]
    )
    return json_response(result)
