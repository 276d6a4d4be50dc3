"""Client-Server API, "Profiles" (profile.yaml): display name, avatar URL and, since
v1.16, any other field (``m.tz``, custom fields) through ``/profile/{userId}/{keyName}``.

The display name and avatar routes come first, so their path templates keep what guests
may do (``api/guest_access.py``: set their own display name)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.errors import Errcode, MatrixError

routes = RouteTable()

_PROFILE = f"{CLIENT_V3}/profile/{{userId}}"


def _user_id(ctx: RequestContext) -> str:
    return ctx.path["userId"]


@routes.get(_PROFILE, auth="optional")
async def get_profile(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/profile/{userId}: every field, custom ones included."""
    return json_response(await ctx.services.profile.get_profile(_user_id(ctx)))


async def _get(ctx: RequestContext, key: str) -> web.Response:
    return json_response(await ctx.services.profile.get_field(_user_id(ctx), key))


async def _put(ctx: RequestContext, key: str) -> web.Response:
    """The body holds the field under its own name ("exactly one property. The key of
    that property MUST match the keyName"); 400 ``M_MISSING_PARAM`` without it."""
    body = await ctx.body()
    if key not in body.data:
        raise MatrixError(Errcode.MISSING_PARAM, f"Missing key '{key}'")
    await ctx.services.profile.set_field(ctx.user.user_id, _user_id(ctx), key, body.data[key])
    return json_response({})


async def _delete(ctx: RequestContext, key: str) -> web.Response:
    await ctx.services.profile.delete_field(ctx.user.user_id, _user_id(ctx), key)
    return json_response({})


@routes.get(f"{_PROFILE}/displayname", auth="optional")
async def get_displayname(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/profile/{userId}/displayname"""
    return await _get(ctx, "displayname")


@routes.get(f"{_PROFILE}/avatar_url", auth="optional")
async def get_avatar_url(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/profile/{userId}/avatar_url"""
    return await _get(ctx, "avatar_url")


@routes.put(f"{_PROFILE}/displayname", rate_limited=True)
async def set_displayname(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/profile/{userId}/displayname"""
    return await _put(ctx, "displayname")


@routes.put(f"{_PROFILE}/avatar_url", rate_limited=True)
async def set_avatar_url(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/profile/{userId}/avatar_url"""
    return await _put(ctx, "avatar_url")


@routes.delete(f"{_PROFILE}/displayname", rate_limited=True)
async def delete_displayname(ctx: RequestContext) -> web.Response:
    """DELETE /_matrix/client/v3/profile/{userId}/displayname (clears it, as Synapse does)"""
    return await _delete(ctx, "displayname")


@routes.delete(f"{_PROFILE}/avatar_url", rate_limited=True)
async def delete_avatar_url(ctx: RequestContext) -> web.Response:
    """DELETE /_matrix/client/v3/profile/{userId}/avatar_url (clears it, as Synapse does)"""
    return await _delete(ctx, "avatar_url")


@routes.get(f"{_PROFILE}/{{keyName}}", auth="optional")
async def get_profile_field(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/profile/{userId}/{keyName}"""
    return await _get(ctx, ctx.path["keyName"])


@routes.put(f"{_PROFILE}/{{keyName}}", rate_limited=True)
async def set_profile_field(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/profile/{userId}/{keyName}"""
    return await _put(ctx, ctx.path["keyName"])


@routes.delete(f"{_PROFILE}/{{keyName}}", rate_limited=True)
async def delete_profile_field(ctx: RequestContext) -> web.Response:
    """DELETE /_matrix/client/v3/profile/{userId}/{keyName}"""
    return await _delete(ctx, ctx.path["keyName"])
