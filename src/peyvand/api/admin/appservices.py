"""The application services' delivery, for the operator (issue 20, "Admin visibility").

Every endpoint needs a server admin's access token. Each registered appservice is shown
with ``id``, ``url``, ``state`` (``up``, ``backing_off``, ``down`` once retries wait the
longest, ``no_url`` when it gets no transactions), ``last_txn_id``, ``last_success_ts``,
``queue_length`` (events waiting to be sent), ``catching_up`` (more are read from the
database), ``consecutive_failures``, ``last_error``, ``next_retry_ts`` and
``events_position`` (the events-stream position it acknowledged). A retry asked by an
admin is recorded in the audit log (``appservice_retry``).
"""

from __future__ import annotations

from aiohttp import web

from peyvand.api.admin.media import _admin
from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.compliance.audit import AuditAction
from peyvand.errors import Errcode, MatrixError
from peyvand.services.appservice.sender import SenderStatus

routes = RouteTable()

_APPSERVICES = "/_peyvand/admin/v1/appservices"


def _status_of(ctx: RequestContext) -> SenderStatus:
    status = ctx.services.appservice_transactions.status_of(ctx.path["appservice_id"])
    if status is None:
        raise MatrixError(Errcode.NOT_FOUND, "No application service with this ID")
    return status


@routes.get(_APPSERVICES)
async def list_appservices(ctx: RequestContext) -> web.Response:
    """GET /_peyvand/admin/v1/appservices: every registered appservice, by ID."""
    _admin(ctx)
    statuses = ctx.services.appservice_transactions.status()
    return json_response({"appservices": [s.as_json() for s in statuses]})


@routes.get(f"{_APPSERVICES}/{{appservice_id}}")
async def get_appservice(ctx: RequestContext) -> web.Response:
    """GET /_peyvand/admin/v1/appservices/{appserviceId}; 404 ``M_NOT_FOUND`` if unknown."""
    _admin(ctx)
    return json_response(_status_of(ctx).as_json())


@routes.post(f"{_APPSERVICES}/{{appservice_id}}/retry")
async def retry_appservice(ctx: RequestContext) -> web.Response:
    """POST /_peyvand/admin/v1/appservices/{appserviceId}/retry: a sender waiting to
    retry a failed transaction tries now. Body (optional): ``reason`` (audit log).
    Answers ``retried`` (false: it was not waiting) and the state before the retry."""
    admin = _admin(ctx)
    status = _status_of(ctx)
    body = await ctx.body()
    reason = body.str("reason", None)
    retried = ctx.services.appservice_transactions.retry_now(status.appservice_id)
    await ctx.services.audit.record(
        admin.user_id,
        AuditAction.APPSERVICE_RETRY,
        f"appservice:{status.appservice_id}",
        reason=reason,
        details={"retried": retried, "consecutive_failures": status.consecutive_failures},
    )
    return json_response({"retried": retried, **status.as_json()})
