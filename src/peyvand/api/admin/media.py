"""Media administration, on Synapse's admin API paths: quarantine, delete, purge.

Every endpoint needs a server admin's access token (``peyvand register-user --admin``).
"""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.api.validation import query_bool, query_int
from peyvand.errors import Errcode, MatrixError
from peyvand.services.requester import Requester

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
    await ctx.services.media.set_quarantined(
        ctx.path["server_name"], ctx.path["media_id"], admin.user_id
    )
    return json_response({})


@routes.post(f"{_ADMIN}/media/unquarantine/{{server_name}}/{{media_id}}")
async def unquarantine(ctx: RequestContext) -> web.Response:
    """POST /_synapse/admin/v1/media/unquarantine/{serverName}/{mediaId}: serve it, and
    every item with the same bytes, again."""
    _admin(ctx)
    await ctx.services.media.set_quarantined(ctx.path["server_name"], ctx.path["media_id"], None)
    return json_response({})


@routes.delete(f"{_ADMIN}/media/{{server_name}}/{{media_id}}")
async def delete_media(ctx: RequestContext) -> web.Response:
    """DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}: the row, its thumbnails and
    every file no other media item shares."""
    _admin(ctx)
    key = (ctx.path["server_name"], ctx.path["media_id"])
    deleted = await ctx.services.media.delete([key])
    if not deleted:
        raise MatrixError(Errcode.NOT_FOUND, "Media not found")
    return json_response({"deleted_media": [key[1]], "total": deleted})


@routes.post(f"{_ADMIN}/media/delete")
async def purge_local_media(ctx: RequestContext) -> web.Response:
    """POST /_synapse/admin/v1/media/delete?before_ts=<ms>[&keep_profiles=true]: delete
    local media not downloaded since ``before_ts`` (quarantined media is kept)."""
    _admin(ctx)
    before_ts = _before_ts(ctx)
    total = await ctx.services.media.purge_not_accessed_since(
        before_ts,
        local=True,
        keep_profile_media=query_bool(ctx.query, "keep_profiles", True),
    )
    return json_response({"total": total})


@routes.post(f"{_ADMIN}/purge_media_cache")
async def purge_remote_cache(ctx: RequestContext) -> web.Response:
    """POST /_synapse/admin/v1/purge_media_cache?before_ts=<ms>: drop cached remote media
    not downloaded since ``before_ts``."""
    _admin(ctx)
    deleted = await ctx.services.media.purge_not_accessed_since(
        _before_ts(ctx), local=False, keep_profile_media=False
    )
    return json_response({"deleted": deleted})


def _before_ts(ctx: RequestContext) -> int:
    if "before_ts" not in ctx.query:
        raise MatrixError(Errcode.MISSING_PARAM, "Missing 'before_ts' query parameter")
    return query_int(ctx.query, "before_ts", 0)
