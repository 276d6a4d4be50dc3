"""Server notices, sent by an operator (Synapse's "Server Notices" admin API; the rooms
and their rules: ``services/rooms/server_notices.py``).

- ``POST /_synapse/admin/v1/send_server_notice`` and ``PUT .../send_server_notice/{txnId}``
  (idempotent per admin session and txnId): ``{"user_id", "content", "type"?,
  "state_key"?}`` to one local user; ``{"event_id"}``.
- ``POST /_peyvand/admin/v1/server_notices/send_to_all``: ``{"content", "from"?,
  "limit"?}`` to the next page of active local users after ``from``; ``{"sent",
  "failed", "next_from"?}`` (``peyvand server-notice --all`` walks the pages).

Every endpoint needs a server admin's access token (403 ``M_FORBIDDEN``). As in
Synapse: missing fields are 400 ``M_MISSING_PARAM``, server notices switched off or a
user of another server 400, an unknown user 404. Beyond Synapse, a notice to the system
user, a membership or state of the room's rules is 400 ``M_INVALID_PARAM``
(``ServerNoticesService.check_recipient`` and ``send_notice``).
"""

from __future__ import annotations

from aiohttp import web

from peyvand.api.admin.media import _admin
from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.api.validation import Body
from peyvand.errors import Errcode, MatrixError
from peyvand.services.rooms.server_notices import MAX_PAGE
from peyvand.services.timeline.event_creation import TxnKey
from peyvand.types import JsonDict, is_valid_user_id

routes = RouteTable()

_SEND = "/_synapse/admin/v1/send_server_notice"
DEFAULT_PAGE = 100


def _content(body: Body) -> JsonDict:
    if "content" not in body:
        raise MatrixError(Errcode.MISSING_PARAM, "Missing params: ['content']")
    return body.dict("content")


async def _send(ctx: RequestContext, txn_id: str | None) -> web.Response:
    admin = _admin(ctx)
    body = await ctx.body()
    missing = [key for key in ("user_id", "content") if key not in body]
    if missing:
        raise MatrixError(Errcode.MISSING_PARAM, f"Missing params: {missing}")
    user_id = body.str("user_id")
    if not is_valid_user_id(user_id):
        raise MatrixError(Errcode.INVALID_PARAM, f"Invalid user ID: {user_id!r}")
    content = _content(body)
    event_type = body.str("type", "m.room.message")
    state_key = body.str("state_key", None)
    notices = ctx.services.server_notices
    recipient = await notices.check_recipient(user_id)
    txn: TxnKey | None = None
    if txn_id is not None:
        txn = (admin.user_id, admin.device_id, f"send_server_notice/{recipient}/{txn_id}")
    event_id = await notices.send_notice(recipient, content, event_type, state_key, txn=txn)
    return json_response({"event_id": event_id})


@routes.post(_SEND)
async def send_server_notice(ctx: RequestContext) -> web.Response:
    """POST /_synapse/admin/v1/send_server_notice"""
    return await _send(ctx, None)


@routes.put(f"{_SEND}/{{txnId}}")
async def send_server_notice_txn(ctx: RequestContext) -> web.Response:
    """PUT /_synapse/admin/v1/send_server_notice/{txnId}"""
    return await _send(ctx, ctx.path["txnId"])


@routes.post("/_peyvand/admin/v1/server_notices/send_to_all")
async def send_to_all(ctx: RequestContext) -> web.Response:
    """POST /_peyvand/admin/v1/server_notices/send_to_all: one page of a notice to
    every active local user."""
    _admin(ctx)
    body = await ctx.body()
    content = _content(body)
    after = body.str("from", "")
    if after and not is_valid_user_id(after):
        raise MatrixError(Errcode.INVALID_PARAM, "'from' must be a user ID")
    limit = body.int("limit", DEFAULT_PAGE, minimum=1, maximum=MAX_PAGE)
    result = await ctx.services.server_notices.send_to_page(content, after, limit)
    answer: JsonDict = {"sent": result.sent, "failed": list(result.failed)}
    if result.next_from is not None:
        answer["next_from"] = result.next_from
    return json_response(answer)
