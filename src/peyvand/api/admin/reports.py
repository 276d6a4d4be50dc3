"""Content reports for server admins: ``GET /_peyvand/admin/v1/reports`` (newest first,
paged with ``from`` / ``limit``) and ``GET /_peyvand/admin/v1/reports/{id}``."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.admin.media import _admin
from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.api.validation import query_int
from peyvand.compliance.reports import Report
from peyvand.errors import Errcode, MatrixError
from peyvand.types import JsonDict

routes = RouteTable()

_REPORTS = "/_peyvand/admin/v1/reports"


def _json(report: Report) -> JsonDict:
    out: JsonDict = {
        "id": report.report_id,
        "kind": report.kind,
        "reporter": report.reporter,
        "reason": report.reason,
        "received_ts": report.received_ts,
    }
    for key, value in (
        ("room_id", report.room_id),
        ("event_id", report.event_id),
        ("user_id", report.user_id),
        ("score", report.score),
    ):
        if value is not None:
            out[key] = value
    return out


@routes.get(_REPORTS)
async def list_reports(ctx: RequestContext) -> web.Response:
    """``{"reports": [...], "total": n, "next_token"?: id}``; pass ``next_token`` as
    ``from`` for the next (older) page."""
    _admin(ctx)
    before = query_int(ctx.query, "from", 0, minimum=0) or None
    limit = query_int(ctx.query, "limit", 100, minimum=1, maximum=1000)
    reports, total = await ctx.services.reports.list(before=before, limit=limit)
    out: JsonDict = {"reports": [_json(r) for r in reports], "total": total}
    if len(reports) == limit and reports[-1].report_id > 1:
        out["next_token"] = reports[-1].report_id
    return json_response(out)


@routes.get(f"{_REPORTS}/{{report_id}}")
async def get_report(ctx: RequestContext) -> web.Response:
    _admin(ctx)
    raw = ctx.path["report_id"]
    report = await ctx.services.reports.get(int(raw)) if raw.isdigit() else None
    if report is None:
        raise MatrixError(Errcode.NOT_FOUND, "No such report")
    return json_response(_json(report))
