"""Media administration, on Synapse's admin API paths: quarantine, delete, purge.

Every endpoint needs a server admin's access token (``peyvand register-user --admin``).
"""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.api.validation import query_bool, query_int
from peyvand.compliance.audit import AuditAction
from peyvand.errors import Errcode, MatrixError
from peyvand.services.accounts.requester import Requester
from peyvand.types import ServerName

routes = RouteTable()

_ADMIN = "/_synapse/admin/v1"


def _admin(ctx: RequestContext) -> Requester:
    requester = ctx.user
    if not requester.is_admin:
        raise MatrixError(Errcode.FORBIDDEN, "You are not a server admin")
    return requester


@routes.post(f"{_ADMIN}/media/quarantine/{{server_name}}/{{media_id}}")
async def quarantine(ctx: RequestContext) -> web.Response:
    """POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}: never serve this
    item, or any other with the same bytes, again (files are kept, as evidence, until
    deleted)."""
    admin = _admin(ctx)
    server_name, media_id = ServerName(ctx.path["server_name"]), ctx.path["media_id"]
    await ctx.services.media.set_quarantined(server_name, media_id, admin.user_id)
    await ctx.services.audit.record(
        admin.user_id, AuditAction.QUARANTINE, f"mxc://{server_name}/{media_id}"
    )
    return json_response({})


@routes.post(f"{_ADMIN}/media/unquarantine/{{server_name}}/{{media_id}}")
async def unquarantine(ctx: RequestContext) -> web.Response:
    """POST /_synapse/admin/v1/media/unquarantine/{serverName}/{mediaId}: serve it, and
    every item with the same bytes, again."""
    admin = _admin(ctx)
    server_name, media_id = ServerName(ctx.path["server_name"]), ctx.path["media_id"]
    await ctx.services.media.set_quarantined(server_name, media_id, None)
    await ctx.services.audit.record(
        admin.user_id, AuditAction.UNQUARANTINE, f"mxc://{server_name}/{media_id}"
    )
    return json_response({})


@routes.delete(f"{_ADMIN}/media/{{server_name}}/{{media_id}}")
async def delete_media(ctx: RequestContext) -> web.Response:
    """DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}: the row, its thumbnails and
    every file no other media item shares."""
    admin = _admin(ctx)
    key = (ServerName(ctx.path["server_name"]), ctx.path["media_id"])
    deleted = await ctx.services.media.delete([key])
    if not deleted:
        raise MatrixError(Errcode.NOT_FOUND, "Media not found")
    await ctx.services.audit.record(
        admin.user_id,
        AuditAction.MEDIA_DELETE,
        f"mxc://{key[0]}/{key[1]}",
        details={"deleted": deleted},
    )
    return json_response({"deleted_media": [key[1]], "total": deleted})


@routes.post(f"{_ADMIN}/media/delete")
async def purge_local_media(ctx: RequestContext) -> web.Response:
    """POST /_synapse/admin/v1/media/delete?before_ts=<ms>[&keep_profiles=true]: delete
    local media not downloaded since ``before_ts`` (quarantined media is kept)."""
    admin = _admin(ctx)
    before_ts = _before_ts(ctx)
    keep_profiles = query_bool(ctx.query, "keep_profiles", True)
    total = await ctx.services.media.purge_not_accessed_since(
        before_ts, local=True, keep_profile_media=keep_profiles
    )
    await ctx.services.audit.record(
        admin.user_id,
        AuditAction.MEDIA_PURGE,
        "local",
        details={"before_ts": before_ts, "keep_profiles": keep_profiles, "total": total},
    )
    return json_response({"total": total})


@routes.post(f"{_ADMIN}/purge_media_cache")
async def purge_remote_cache(ctx: RequestContext) -> web.Response:
    """POST /_synapse/admin/v1/purge_media_cache?before_ts=<ms>: drop cached remote media
    not downloaded since ``before_ts``."""
    admin = _admin(ctx)
    before_ts = _before_ts(ctx)
    deleted = await ctx.services.media.purge_not_accessed_since(
        before_ts, local=False, keep_profile_media=False
    )
    await ctx.services.audit.record(
        admin.user_id,
        AuditAction.MEDIA_PURGE,
        "remote",
        details={"before_ts": before_ts, "deleted": deleted},
    )
    return json_response({"deleted": deleted})


def _before_ts(ctx: RequestContext) -> int:
    if "before_ts" not in ctx.query:
        raise MatrixError(Errcode.MISSING_PARAM, "Missing 'before_ts' query parameter")
    return query_int(ctx.query, "before_ts", 0)
