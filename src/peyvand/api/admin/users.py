"""Deactivating and erasing accounts (docs/compliance.md, "Erasure"), and the
Client-Server API's GET /admin/whois/{userId}.

Both endpoints need a server admin's access token and work on local users only (400
``M_INVALID_PARAM`` for a malformed or remote user ID, 404 ``M_NOT_FOUND`` for an
unknown one, as Synapse). Each deactivation is recorded in the audit log with the admin
as actor: ``erasure`` when the account was erased, ``deactivate`` otherwise.
"""

from __future__ import annotations

from aiohttp import web

from peyvand.api.admin.media import _admin
from peyvand.api.container import Services
from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.compliance.audit import AuditAction
from peyvand.compliance.erasure import ErasureReport
from peyvand.errors import Errcode, MatrixError, invalid_param
from peyvand.types import JsonDict, UserID, is_valid_user_id, server_name_of

routes = RouteTable()


@routes.post("/_peyvand/admin/v1/users/{user_id}/deactivate")
async def deactivate_user(ctx: RequestContext) -> web.Response:
    """POST /_peyvand/admin/v1/users/{userId}/deactivate: deactivate a local account and,
    with ``erase`` (default false), erase it. Body: ``erase``, ``reason`` (recorded in the
    audit log). Answers what was done (``erasure_json``)."""
    admin = _admin(ctx)
    user_id = _local_user(ctx, ctx.path["user_id"])
    body = await ctx.body()
    erase = body.bool("erase", False)
    reason = body.str("reason", None)
    report = await deactivate_account(ctx.services, admin.user_id, user_id, erase, reason)
    return json_response(report)


@routes.post("/_synapse/admin/v1/deactivate/{user_id}")
async def synapse_deactivate_user(ctx: RequestContext) -> web.Response:
    """POST /_synapse/admin/v1/deactivate/{userId}: Synapse's "Deactivate Account"; body
    ``erase`` (default false; an empty body is allowed). There are no third-party IDs to
    unbind, hence always ``success``."""
    admin = _admin(ctx)
    user_id = _local_user(ctx, ctx.path["user_id"])
    body = await ctx.body()
    erase = body.bool("erase", False)
    await deactivate_account(ctx.services, admin.user_id, user_id, erase, None)
    return json_response({"id_server_unbind_result": "success"})


@routes.get(f"{CLIENT_V3}/admin/whois/{{userId}}")
async def whois(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/admin/whois/{userId} (Client-Server API, "Server
    Administration"): the user's devices with their last connection. Only for the user
    themselves or a server admin, as the spec allows. One session per device; the user
    agent is not recorded here, so it is null."""
    user_id = ctx.path["userId"]
    if user_id != ctx.user.user_id and not ctx.user.is_admin:
        raise MatrixError(Errcode.FORBIDDEN, "You may only look up your own account")
    if not is_valid_user_id(user_id) or server_name_of(user_id) != ctx.services.config.server_name:
        raise MatrixError(Errcode.NOT_FOUND, "Unknown user")
    devices = await ctx.services.auth.get_devices(UserID(user_id))
    return json_response(
        {
            "user_id": user_id,
            "devices": {
                device.device_id: {
                    "sessions": [
                        {
                            "connections": []
                            if device.last_seen_ip is None
                            else [
                                {
                                    "ip": device.last_seen_ip,
                                    "last_seen": device.last_seen_ts,
                                    "user_agent": None,
                                }
                            ]
                        }
                    ]
                }
                for device in devices
            },
        }
    )


async def deactivate_account(
    services: Services, actor: str, user_id: UserID, erase: bool, reason: str | None
) -> JsonDict:
    """Deactivate (and with ``erase``, erase) ``user_id``, record it in the audit log
    unless it is a user's plain deactivation of their own account, and answer the report.

    A user deactivating their own account without erasure is no admin action, so it is not
    recorded; erasure always is, whoever asked for it."""
    report = await services.erasure.deactivate(user_id, erase=erase)
    await services.threepids.on_deactivated(user_id)
    details = erasure_json(report)
    if erase or actor != user_id:
        action = AuditAction.ERASURE if erase else AuditAction.DEACTIVATE
        await services.audit.record(actor, action, user_id, reason=reason, details=details)
    return {"user_id": user_id, **details}


def erasure_json(report: ErasureReport) -> JsonDict:
    """What a deactivation did. ``media_deleted`` counts the user's uploads and any other
    media only their events named; held events and media are counted apart."""
    return {
        "erased": report.erased,
        "rooms_left": report.rooms_left,
        "profile_kept": report.profile_kept,
        "events_erased": report.events.events,
        "events_held": report.events.held,
        "media_deleted": report.media_deleted + report.events.media,
        "media_held": report.media_held,
    }


def _local_user(ctx: RequestContext, user_id: str) -> UserID:
    if not is_valid_user_id(user_id):
        raise invalid_param(f"Invalid user ID: {user_id!r}")
    if server_name_of(user_id) != ctx.services.config.server_name:
        raise invalid_param("Only local users can be deactivated")
    return UserID(user_id)
