"""Retention for server admins (docs/compliance.md, "Retention").

``POST /_peyvand/admin/v1/retention/run`` runs the purge now instead of waiting for the
next interval. Body (all optional): ``room_id`` (one room; default every room),
``now_ts`` (evaluate the policies as of this time, in milliseconds: catching up after
a change of policy, or checking what a later run will delete) and ``reason`` (for the
audit log, where every run is recorded). Answers what was deleted.

``GET /_peyvand/admin/v1/rooms/{roomId}/retention`` answers the room's effective policy.
"""

from __future__ import annotations

from aiohttp import web

from peyvand.api.admin.media import _admin
from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.compliance.audit import AuditAction
from peyvand.compliance.purge import PurgeCount
from peyvand.errors import Errcode, MatrixError
from peyvand.types import JsonDict, RoomID

routes = RouteTable()

_MAX_TS = 2**53 - 1


def _count(count: PurgeCount) -> JsonDict:
    return {"events": count.events, "held": count.held, "media": count.media}


@routes.post("/_peyvand/admin/v1/retention/run")
async def run_retention(ctx: RequestContext) -> web.Response:
    admin = _admin(ctx)
    body = await ctx.body()
    room_id = body.str("room_id", None)
    now_ts = body.int("now_ts", None)
    reason = body.str("reason", None)
    if now_ts is not None and not 0 <= now_ts <= _MAX_TS:
        raise MatrixError(Errcode.INVALID_PARAM, "'now_ts' is out of range")
    if room_id is not None and await ctx.services.state.get_room(RoomID(room_id)) is None:
        raise MatrixError(Errcode.NOT_FOUND, "Unknown room")
    report = await ctx.services.retention.run(
        now_ms=now_ts, room_id=RoomID(room_id) if room_id is not None else None
    )
    result: JsonDict = {
        "rooms": report.rooms,
        "purged": _count(report.purged),
        "redacted_content": _count(report.redacted_content),
    }
    await ctx.services.audit.record(
        admin.user_id,
        AuditAction.PURGE,
        room_id or "*",
        reason=reason,
        details={"kind": "retention", "now_ts": now_ts, **result},
    )
    return json_response(result)


@routes.get("/_peyvand/admin/v1/rooms/{room_id}/retention")
async def room_retention(ctx: RequestContext) -> web.Response:
    _admin(ctx)
    room_id = RoomID(ctx.path["room_id"])
    if await ctx.services.state.get_room(room_id) is None:
        raise MatrixError(Errcode.NOT_FOUND, "Unknown room")
    return json_response(
        {
            "max_lifetime": await ctx.services.retention.max_lifetime(room_id),
            "disappearing_timer_ms": await ctx.services.disappearing.room_timer(room_id),
        }
    )
