"""The audit log of admin actions (docs/compliance.md): read it, verify its hash chain.

Every endpoint needs a server admin's access token (``peyvand register-user --admin``).
"""

from __future__ import annotations

from aiohttp import web

from peyvand.api.admin.media import _admin
from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.api.validation import query_int
from peyvand.types import JsonDict

routes = RouteTable()

_ADMIN = "/_peyvand/admin/v1"
_DEFAULT_LIMIT = 100
_MAX_LIMIT = 1000


@routes.get(f"{_ADMIN}/audit_log")
async def audit_log(ctx: RequestContext) -> web.Response:
    """GET /_peyvand/admin/v1/audit_log?from=<seq>&limit=<n>: the entries from number
    ``from`` (default 1) on, oldest first, at most ``limit`` (default 100, at most 1000).
    ``next`` is the ``from`` of the following page, absent on the last page."""
    _admin(ctx)
    start = max(1, query_int(ctx.query, "from", 1))
    limit = query_int(ctx.query, "limit", _DEFAULT_LIMIT, minimum=1, maximum=_MAX_LIMIT)
    # One more than asked for: whether there is a next page, without another query.
    entries = await ctx.services.audit.entries(start - 1, limit + 1)
    body: JsonDict = {"entries": entries[:limit]}
    if len(entries) > limit:
        body["next"] = entries[limit]["seq"]
    return json_response(body)


@routes.get(f"{_ADMIN}/audit_log/verify")
async def verify_audit_log(ctx: RequestContext) -> web.Response:
    """GET /_peyvand/admin/v1/audit_log/verify: re-compute the hash chain; ``ok`` false,
    with ``first_bad_seq`` and ``problem``, if an entry was changed, removed, reordered or
    inserted (``peyvand audit verify`` does the same from the command line)."""
    _admin(ctx)
    result = await ctx.services.audit.verify()
    return json_response(result.as_json())
