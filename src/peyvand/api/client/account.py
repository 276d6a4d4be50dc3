"""Client-Server API, "Account registration and management" (registration.yaml,
registration_tokens.yaml, whoami.yaml, password_management.yaml,
account_deactivation.yaml, administrative_contact.yaml)."""

from __future__ import annotations

import html

from aiohttp import web

from peyvand.api.access_tokens import APPSERVICE_LOGIN_TYPE, appservice_of
from peyvand.api.admin.users import deactivate_account
from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.errors import Errcode, MatrixError, forbidden, missing_param
from peyvand.services.accounts.auth import Session
from peyvand.services.accounts.threepids import VALIDATE_PATH
from peyvand.services.appservice.auth import NO_DEVICE
from peyvand.types import JsonDict, UserID

routes = RouteTable()

_NO_THREEPIDS = "Identity servers and phone numbers are not supported on this server"


@routes.post(
    f"{CLIENT_V3}/register",
    auth="none",
    rate_limited=True,
    limit_class="login",
    appservice_limit="check",
)
async def register(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/register: create a ``user`` account through UIA, a
    ``guest`` account without (403 M_GUEST_ACCESS_FORBIDDEN unless guests are allowed),
    or, with ``type: m.login.application_service`` and an appservice's ``as_token``, a
    user of its namespaces without either."""
    kind = ctx.query.get("kind", "user")
    if kind not in ("user", "guest"):
        raise MatrixError(Errcode.INVALID_PARAM, "'kind' must be user or guest")
    body = await ctx.body()
    if kind == "user" and body.str("type", None) == APPSERVICE_LOGIN_TYPE:
        user_id, session = await ctx.services.registration.register_appservice_user(
            appservice_of(ctx),
            body.str("username", None),
            device_id=body.str("device_id", None),
            display_name=body.str("initial_device_display_name", None),
            inhibit_login=body.bool("inhibit_login", False),
            ip=ctx.request.remote,
        )
        return json_response(_registered(ctx, user_id, session))
    if kind == "guest":
        guest = await ctx.services.registration.register_guest(
            device_id=body.str("device_id", None),
            display_name=body.str("initial_device_display_name", None),
            ip=ctx.request.remote,
        )
        return json_response(
            {
                "user_id": guest.user_id,
                "home_server": ctx.services.config.server_name,
                "access_token": guest.access_token,
                "device_id": guest.device_id,
            }
        )
    user_id, session = await ctx.services.registration.register(
        auth=body.dict("auth", None),
        username=body.str("username", None),
        password=body.str("password", None),
        device_id=body.str("device_id", None),
        display_name=body.str("initial_device_display_name", None),
        inhibit_login=body.bool("inhibit_login", False),
        ip=ctx.request.remote,
        guest_access_token=body.str("guest_access_token", None),
    )
    return json_response(_registered(ctx, user_id, session))


def _registered(ctx: RequestContext, user_id: UserID, session: Session | None) -> JsonDict:
    """The body of a successful registration (no token or device if login was inhibited)."""
    result: JsonDict = {"user_id": user_id, "home_server": ctx.services.config.server_name}
    if session is not None:
        result["access_token"] = session.access_token
        result["device_id"] = session.device_id
    return result


@routes.get(f"{CLIENT_V3}/register/available", auth="none", rate_limited=True, limit_class="login")
async def register_available(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/register/available: 200 if ``username`` can be registered,
    else M_USER_IN_USE or M_INVALID_USERNAME."""
    registration = ctx.services.registration
    if not await registration.enabled():
        raise forbidden("Registration is disabled")
    username = ctx.query.get("username")
    if username is None:
        raise missing_param("Missing parameter: username")
    await registration.check_username(username)
    return json_response({"available": True})


@routes.get(
    "/_matrix/client/v1/register/m.login.registration_token/validity",
    auth="none",
    rate_limited=True,
    limit_class="login",
)
async def registration_token_validity(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v1/register/m.login.registration_token/validity: whether a
    registration token would currently be accepted."""
    token = ctx.query.get("token")
    if token is None:
        raise missing_param("Missing parameter: token")
    return json_response({"valid": await ctx.services.registration.token_is_valid(token)})


@routes.get(f"{CLIENT_V3}/account/whoami")
async def whoami(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/account/whoami: the owner of the access token; no
    ``device_id`` for an application service that named none."""
    requester = ctx.user
    result: JsonDict = {"user_id": requester.user_id, "is_guest": requester.is_guest}
    if requester.device_id != NO_DEVICE:
        result["device_id"] = requester.device_id
    return json_response(result)


@routes.post(f"{CLIENT_V3}/account/password", rate_limited=True)
async def change_password(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/account/password: set a new password after UIA with the
    current one; other devices are logged out unless ``logout_devices`` is false."""
    body = await ctx.body()
    new_password = body.str("new_password")
    logout_devices = body.bool("logout_devices", True)
    auth = ctx.services.auth
    await auth.require_password(ctx.user, body.dict("auth", None), "POST /account/password")
    await auth.change_password(ctx.user, new_password, logout_devices=logout_devices)
    return json_response({})


@routes.post(f"{CLIENT_V3}/account/deactivate", rate_limited=True)
async def deactivate(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/account/deactivate: deactivate the account after UIA, leave
    every room and, with ``erase``, erase the profile, the media uploaded and the content
    of every event sent (docs/compliance.md, "Erasure"; recorded in the audit log). No
    identity server is involved, hence ``no-support``. An application service needs no
    UIA: it deactivates its own users (its bot, or a user it acts as with ``?user_id=``),
    who have no password, as Synapse allows."""
    body = await ctx.body()
    erase = body.bool("erase", False)
    user_id = ctx.user.user_id
    if ctx.user.appservice is None:
        await ctx.services.auth.require_password(
            ctx.user, body.dict("auth", None), "POST /account/deactivate"
        )
    await deactivate_account(ctx.services, user_id, user_id, erase, None)
    return json_response({"id_server_unbind_result": "no-support"})


@routes.get(f"{CLIENT_V3}/account/3pid")
async def get_threepids(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/account/3pid: the user's validated email addresses."""
    return json_response(
        {"threepids": await ctx.services.threepids.get_threepids(ctx.user.user_id)}
    )


@routes.post(f"{CLIENT_V3}/account/3pid/email/requestToken", rate_limited=True, limit_class="login")
async def email_request_token(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/account/3pid/email/requestToken: mail a validation link to
    ``email`` (``services.accounts.threepids``); 400 M_THREEPID_MEDIUM_NOT_SUPPORTED
    without ``[email] smtp_host``, M_THREEPID_IN_USE for an address already bound."""
    body = await ctx.body()
    sid = await ctx.services.threepids.request_email_token(
        body.str("client_secret"),
        body.str("email"),
        body.int("send_attempt"),
        body.str("next_link", None),
    )
    return json_response({"sid": sid})


@routes.get(VALIDATE_PATH, auth="none", rate_limited=True, limit_class="login")
async def email_validate(ctx: RequestContext) -> web.Response:
    """GET /_peyvand/client/email/validate?sid&client_secret&token (a Peyvand endpoint,
    the link mailed by requestToken): validate the session; a small page, or a redirect
    to the session's ``next_link``."""
    values = []
    for name in ("sid", "client_secret", "token"):
        value = ctx.query.get(name)
        if not value:
            raise missing_param(f"Missing parameter: {name}")
        values.append(value)
    sid, client_secret, token = values
    try:
        next_link = await ctx.services.threepids.validate(sid, client_secret, token)
    except MatrixError as exc:
        if exc.errcode is not Errcode.THREEPID_AUTH_FAILED:
            raise
        return web.Response(text=_page(exc.message), status=400, content_type="text/html")
    if next_link is not None:
        return web.Response(status=302, headers={"Location": next_link})
    return web.Response(
        text=_page("Your email address has been validated."), content_type="text/html"
    )


def _page(message: str) -> str:
    return (
        "<!DOCTYPE html><html><head><title>Email validation</title></head>"
        f"<body><p>{html.escape(message)}</p></body></html>"
    )


@routes.post(f"{CLIENT_V3}/account/3pid/add", rate_limited=True)
async def add_threepid(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/account/3pid/add: after UIA (password, as Synapse), bind the
    address of a validated session; 400 M_THREEPID_AUTH_FAILED if it is not validated,
    M_THREEPID_IN_USE if another user has it."""
    body = await ctx.body()
    client_secret = body.str("client_secret")
    sid = body.str("sid")
    await ctx.services.auth.require_password(
        ctx.user, body.dict("auth", None), "POST /account/3pid/add"
    )
    await ctx.services.threepids.add_threepid(ctx.user.user_id, sid, client_secret)
    return json_response({})


@routes.post(f"{CLIENT_V3}/account/3pid/delete", rate_limited=True)
async def delete_threepid(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/account/3pid/delete: unbind an address (its email pushers
    go with it); no identity server is involved, hence ``no-support``."""
    body = await ctx.body()
    medium = body.str("medium")
    address = body.str("address")
    await ctx.services.threepids.delete_threepid(ctx.user.user_id, medium, address)
    return json_response({"id_server_unbind_result": "no-support"})


async def _threepids_unsupported(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/account/3pid/{bind,msisdn/requestToken}: refused (no
    identity server, no SMS)."""
    raise forbidden(_NO_THREEPIDS)


async def _threepid_not_found(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/account/3pid/unbind: nothing is bound at an identity server."""
    body = await ctx.body()
    body.str("medium")
    body.str("address")
    raise MatrixError(Errcode.THREEPID_NOT_FOUND, "No such third-party identifier")


for _suffix in ("bind", "msisdn/requestToken"):
    routes.post(f"{CLIENT_V3}/account/3pid/{_suffix}")(_threepids_unsupported)
routes.post(f"{CLIENT_V3}/account/3pid/unbind")(_threepid_not_found)
