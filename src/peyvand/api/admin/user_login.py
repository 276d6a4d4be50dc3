"""Synapse's admin API "Login as a user": an access token for acting as a local user.

The token is recorded in the audit log as ``token_issued`` (actor: the admin; target: the
user; details: ``kind``, ``device_id``, ``valid_until_ms``), never the token itself.
"""

from __future__ import annotations

from aiohttp import web

from peyvand.api.admin.media import _admin
from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.compliance.audit import AuditAction
from peyvand.errors import invalid_param
from peyvand.types import UserID, is_valid_user_id, server_name_of

routes = RouteTable()


@routes.post("/_synapse/admin/v1/users/{user_id}/login")
async def login_as_user(ctx: RequestContext) -> web.Response:
    """POST /_synapse/admin/v1/users/{userId}/login: a new access token for a local,
    active user other than the admin. Body (may be empty): ``valid_until_ms`` (the token
    is refused after it; default: it lasts until revoked) and ``reason`` (recorded in the
    audit log; a Peyvand addition). Answers ``{"access_token": ...}``.

    As in Synapse the session has no device: it is not in the user's device list and no
    device-list update tells anyone about it. It ends when it is logged out (POST
    /logout with it), when it expires, or when the user's tokens are all revoked (logout
    from all devices, a password change that logs out other devices, deactivation).
    Errors: 400 ``M_INVALID_PARAM`` for a malformed or remote user ID or the admin's own;
    404 ``M_NOT_FOUND`` for an unknown user; 403 ``M_USER_DEACTIVATED`` for a deactivated
    one; 400 ``M_BAD_JSON`` for a ``valid_until_ms`` that is not an integer."""
    admin = _admin(ctx)
    raw_user_id = ctx.path["user_id"]
    if not is_valid_user_id(raw_user_id):
        raise invalid_param(f"Invalid user ID: {raw_user_id!r}")
    if server_name_of(raw_user_id) != ctx.services.config.server_name:
        raise invalid_param("Only local users can be logged in as")
    user_id = UserID(raw_user_id)
    body = await ctx.body()
    valid_until_ms = body.int("valid_until_ms", None)
    if valid_until_ms is not None and not 0 <= valid_until_ms <= 2**53 - 1:
        raise invalid_param("valid_until_ms is out of range")
    reason = body.str("reason", None)
    session = await ctx.services.auth.login_as(admin.user_id, user_id, valid_until_ms)
    await ctx.services.audit.record(
        admin.user_id,
        AuditAction.TOKEN_ISSUED,
        user_id,
        reason=reason,
        details={
            "kind": "access_token",
            "device_id": session.device_id,
            "valid_until_ms": valid_until_ms,
        },
    )
    return json_response({"access_token": session.access_token})
