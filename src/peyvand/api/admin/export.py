"""Compliance and personal data exports (docs/compliance.md), written on the server into
``<data_dir>/exports/<time>-<kind>-<id>/`` (or ``.zip``).

Every endpoint needs a server admin's access token (``peyvand register-user --admin``).
The request returns once the export is complete and recorded in the audit log; for very
large rooms ``peyvand export`` (with a progress bar) may suit better.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from peyvand.api.admin.media import _admin
from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.api.validation import Body
from peyvand.compliance.export import ExportError, ExportNotFound, ExportResult
from peyvand.errors import Errcode, MatrixError
from peyvand.types import is_valid_user_id

routes = RouteTable()

_ADMIN = "/_peyvand/admin/v1"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@routes.post(f"{_ADMIN}/export/room")
async def export_room(ctx: RequestContext) -> web.Response:
    """POST /_peyvand/admin/v1/export/room ``{"room_id", "since_ts"?, "until_ts"?,
    "reason"?, "zip"?}``: the room's events sent from ``since_ts`` to ``until_ts``
    (milliseconds, both included),
    with attachments; answers ``{"path", "manifest_sha256", "events", ...}``."""
    admin = _admin(ctx)
    body = await ctx.body()
    room_id = body.str("room_id")
    if not room_id.startswith("!"):
        raise MatrixError(Errcode.INVALID_PARAM, "'room_id' must be a room ID")
    since_ts, until_ts = _range(body)
    as_zip = body.bool("zip", False)
    try:
        result = await ctx.services.exporter.export_room(
            room_id,
            since_ts,
            until_ts,
            _destination(ctx, "room", room_id),
            actor=admin.user_id,
            reason=body.str("reason", None),
            as_zip=as_zip,
        )
    except ExportError as exc:
        raise _error(exc) from exc
    return _answer(result)


@routes.post(f"{_ADMIN}/export/user")
async def export_user_messages(ctx: RequestContext) -> web.Response:
    """POST /_peyvand/admin/v1/export/user ``{"user_id", "since_ts"?, "until_ts"?,
    "reason"?, "zip"?}``: every event the user sent in the range, in any room."""
    admin = _admin(ctx)
    body = await ctx.body()
    user_id = _user_id(body)
    since_ts, until_ts = _range(body)
    try:
        result = await ctx.services.exporter.export_user_messages(
            user_id,
            since_ts,
            until_ts,
            _destination(ctx, "user", user_id),
            actor=admin.user_id,
            reason=body.str("reason", None),
            as_zip=body.bool("zip", False),
        )
    except ExportError as exc:
        raise _error(exc) from exc
    return _answer(result)


@routes.post(f"{_ADMIN}/export/personal")
async def export_personal_data(ctx: RequestContext) -> web.Response:
    """POST /_peyvand/admin/v1/export/personal ``{"user_id", "reason"?, "zip"?}``: a
    local user's own data (profile, devices, account data, messages sent, media
    uploaded); 404 ``M_NOT_FOUND`` for an unknown user."""
    admin = _admin(ctx)
    body = await ctx.body()
    user_id = _user_id(body)
    try:
        result = await ctx.services.exporter.export_personal_data(
            user_id,
            _destination(ctx, "personal", user_id),
            actor=admin.user_id,
            reason=body.str("reason", None),
            as_zip=body.bool("zip", False),
        )
    except ExportError as exc:
        raise _error(exc) from exc
    return _answer(result)


def _user_id(body: Body) -> str:
    user_id = body.str("user_id")
    if not is_valid_user_id(user_id):
        raise MatrixError(Errcode.INVALID_PARAM, "'user_id' must be a user ID")
    return user_id


def _range(body: Body) -> tuple[int | None, int | None]:
    since_ts: int | None = body.int("since_ts", None)
    until_ts: int | None = body.int("until_ts", None)
    if since_ts is not None and until_ts is not None and since_ts > until_ts:
        raise MatrixError(Errcode.INVALID_PARAM, "'since_ts' is after 'until_ts'")
    return since_ts, until_ts


def _destination(ctx: RequestContext, kind: str, target: str) -> Path:
    """``<data_dir>/exports/<UTC time to the millisecond>-<kind>-<target, file-safe>``."""
    now = time.time()
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S")
    safe = _UNSAFE.sub("_", target.lstrip("!@")).strip(".")[:80] or "export"
    name = f"{stamp}{int(now * 1000) % 1000:03d}Z-{kind}-{safe}"
    return ctx.services.config.data_dir / "exports" / name


def _error(exc: ExportError) -> MatrixError:
    if isinstance(exc, ExportNotFound):
        return MatrixError(Errcode.NOT_FOUND, str(exc))
    return MatrixError(Errcode.INVALID_PARAM, str(exc))


def _answer(result: ExportResult) -> web.Response:
    return json_response(result.as_json())
