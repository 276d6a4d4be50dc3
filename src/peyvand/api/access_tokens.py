"""Client-Server API, "Using access tokens": where a request carries its token, and the
application service whose ``as_token`` it is."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext
from peyvand.errors import Errcode, MatrixError
from peyvand.services.appservice.registration import ApplicationService

__all__ = ["APPSERVICE_LOGIN_TYPE", "access_token", "appservice_of"]

# The login and registration type of application services.
APPSERVICE_LOGIN_TYPE = "m.login.application_service"


def access_token(request: web.Request) -> str | None:
    """The token of the Authorization header (``Bearer``) or the ``access_token`` query
    parameter; None without either, 401 M_MISSING_TOKEN for a malformed header."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise MatrixError(Errcode.MISSING_TOKEN, "Malformed Authorization header")
        return token.strip()
    return request.query.get("access_token")


def appservice_of(ctx: RequestContext) -> ApplicationService:
    """The application service whose ``as_token`` the request carries, for the
    ``m.login.application_service`` type of /register and /login (routes without central
    auth): 401 M_MISSING_TOKEN without a token, M_UNKNOWN_TOKEN for any other token
    (Application Service API, "Server admin style permissions")."""
    token = access_token(ctx.request)
    if token is None:
        raise MatrixError(Errcode.MISSING_TOKEN, "Missing application service token")
    appservice = ctx.services.appservices.by_token(token, ctx.request.remote)
    if appservice is None:
        raise MatrixError(Errcode.UNKNOWN_TOKEN, "Unknown application service token")
    return appservice
