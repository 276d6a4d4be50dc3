"""Client-Server API, "Profiles": display name and avatar URL."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable

routes = RouteTable()


def _user_id(ctx: RequestContext) -> str:
    return ctx.path["userId"]


@routes.get(f"{CLIENT_V3}/profile/{{userId}}", auth="optional")
async def get_profile(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/profile/{userId}"""
    return json_response(await ctx.services.profile.get_profile(_user_id(ctx)))


async def _get_field(ctx: RequestContext, field: str) -> web.Response:
    profile = await ctx.services.profile.get_profile(_user_id(ctx))
    return json_response({field: profile[field]} if field in profile else {})


@routes.get(f"{CLIENT_V3}/profile/{{userId}}/displayname", auth="optional")
async def get_displayname(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/profile/{userId}/displayname"""
    return await _get_field(ctx, "displayname")


@routes.get(f"{CLIENT_V3}/profile/{{userId}}/avatar_url", auth="optional")
async def get_avatar_url(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/profile/{userId}/avatar_url"""
    return await _get_field(ctx, "avatar_url")


@routes.put(f"{CLIENT_V3}/profile/{{userId}}/displayname", rate_limited=True)
async def set_displayname(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/profile/{userId}/displayname"""
    body = await ctx.body()
    await ctx.services.profile.set_displayname(
        ctx.user.user_id, _user_id(ctx), body.str("displayname")
    )
    return json_response({})


@routes.put(f"{CLIENT_V3}/profile/{{userId}}/avatar_url", rate_limited=True)
async def set_avatar_url(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/profile/{userId}/avatar_url"""
    body = await ctx.body()
    await ctx.services.profile.set_avatar_url(
        ctx.user.user_id, _user_id(ctx), body.str("avatar_url")
    )
    return json_response({})


@routes.delete(f"{CLIENT_V3}/profile/{{userId}}/displayname", rate_limited=True)
async def delete_displayname(ctx: RequestContext) -> web.Response:
    """DELETE /_matrix/client/v3/profile/{userId}/displayname (clears it, as Synapse does)"""
    await ctx.services.profile.set_displayname(ctx.user.user_id, _user_id(ctx), "")
    return json_response({})


@routes.delete(f"{CLIENT_V3}/profile/{{userId}}/avatar_url", rate_limited=True)
async def delete_avatar_url(ctx: RequestContext) -> web.Response:
    """DELETE /_matrix/client/v3/profile/{userId}/avatar_url (clears it, as Synapse does)"""
    await ctx.services.profile.set_avatar_url(ctx.user.user_id, _user_id(ctx), "")
    return json_response({})
