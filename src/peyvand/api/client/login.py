"""Client-Server API, "Login" and "Logout" (login.yaml, logout.yaml)."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.access_tokens import APPSERVICE_LOGIN_TYPE, appservice_of
from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.errors import Errcode, MatrixError
from peyvand.services.accounts.auth import Session, user_from_identifier
from peyvand.services.accounts.uia import PASSWORD

routes = RouteTable()


@routes.get(f"{CLIENT_V3}/login", auth="none")
async def get_login_flows(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/login: the login types this server supports."""
    return json_response({"flows": [{"type": PASSWORD}, {"type": APPSERVICE_LOGIN_TYPE}]})


@routes.post(f"{CLIENT_V3}/login", auth="none", rate_limited=True, limit_class="login")
async def login(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/login: ``m.login.password`` with an ``m.id.user`` identifier
    (or the deprecated top-level ``user``). A known ``device_id`` is reused and its older
    tokens revoked; a wrong user or password is 403 M_FORBIDDEN. With
    ``m.login.application_service`` an appservice, by its ``as_token``, logs in as a user
    of its namespaces."""
    body = await ctx.body()
    login_type = body.str("type")
    device_id = body.str("device_id", None)
    display_name = body.str("initial_device_display_name", None)
    session: Session
    if login_type == PASSWORD:
        session = await ctx.services.auth.login_with_password(
            user_from_identifier(body.data),
            body.str("password"),
            device_id=device_id,
            display_name=display_name,
            ip=ctx.request.remote,
        )
    elif login_type == APPSERVICE_LOGIN_TYPE:
        session = await ctx.services.auth.login_as_appservice_user(
            appservice_of(ctx),
            user_from_identifier(body.data),
            device_id=device_id,
            display_name=display_name,
            ip=ctx.request.remote,
        )
    else:
        raise MatrixError(Errcode.UNKNOWN, "Unknown login type")
    return json_response(
        {
            "user_id": session.user_id,
            "access_token": session.access_token,
            "device_id": session.device_id,
            "home_server": ctx.services.config.server_name,
            "well_known": {"m.homeserver": {"base_url": ctx.services.config.base_url}},
        }
    )


@routes.post(f"{CLIENT_V3}/logout")
async def logout(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/logout: revoke this access token and delete its device."""
    await ctx.services.auth.logout(ctx.user)
    return json_response({})


@routes.post(f"{CLIENT_V3}/logout/all")
async def logout_all(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/logout/all: revoke every token of the user, delete every
    device."""
    await ctx.services.auth.logout_all(ctx.user.user_id)
    return json_response({})
