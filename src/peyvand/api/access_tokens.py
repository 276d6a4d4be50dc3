"""Client-Server API, "Using access tokens": where a request carries its token."""

from __future__ import annotations

from aiohttp import web

from peyvand.errors import Errcode, MatrixError

__all__ = ["access_token"]


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
