"""Synapse's "Registration Tokens" admin API: list, read, create, update and delete the
tokens that ``m.login.registration_token`` accepts (besides those in the config).

Every endpoint needs a server admin's access token. Creating, updating and deleting a
token are recorded in the audit log (``token_issued``, ``token_updated``,
``token_deleted``). A registration token is itself the secret a user types, so the log
never holds it: the target is ``registration_token:sha256:`` and the first 16 hex digits
of the token's SHA-256 (enough to find the entries of a token one knows, too few to
guess it from a long random token; choose long tokens), and the details are its limits.
Field errors are 400 ``M_INVALID_PARAM``, as in Synapse.
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web

from peyvand.api.admin.media import _admin
from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.api.validation import Body
from peyvand.compliance.audit import AuditAction
from peyvand.errors import invalid_param
from peyvand.services.accounts.registration import (
    DEFAULT_TOKEN_LENGTH,
    RegistrationTokenRow,
    registration_token_json,
)

routes = RouteTable()

_TOKENS = "/_synapse/admin/v1/registration_tokens"


def audit_target(token: str) -> str:
    """How the audit log names a registration token (never the token itself)."""
    return "registration_token:sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def _limits(row: RegistrationTokenRow) -> dict[str, Any]:
    return {"uses_allowed": row.uses_allowed, "expiry_time": row.expiry_time}


# Canonical JSON's integer range: larger values would not fit the database columns.
_MAX_INT = 2**53 - 1


def _nullable_int(body: Body, key: str, what: str) -> int | None:
    """``key`` of the body, an integer or null (Synapse's checks and errors)."""
    value = body.data.get(key)
    if value is not None and (type(value) is not int or abs(value) > _MAX_INT):
        raise invalid_param(f"{key} must be {what}")
    return value


def _limit_changes(body: Body) -> dict[str, int | None]:
    """The ``uses_allowed`` and ``expiry_time`` present in the body."""
    changes: dict[str, int | None] = {}
    if "uses_allowed" in body:
        changes["uses_allowed"] = _nullable_int(
            body, "uses_allowed", "a non-negative integer or null"
        )
    if "expiry_time" in body:
        changes["expiry_time"] = _nullable_int(body, "expiry_time", "an integer or null")
    return changes


@routes.get(_TOKENS)
async def list_tokens(ctx: RequestContext) -> web.Response:
    """GET /_synapse/admin/v1/registration_tokens[?valid=true|false]: every database token
    (configured ones are not listed), oldest first; ``valid=true`` only those usable now,
    ``valid=false`` only those expired or used up."""
    _admin(ctx)
    raw = ctx.query.get("valid")
    if raw not in (None, "true", "false"):
        raise invalid_param("valid must be true or false")
    valid = None if raw is None else raw == "true"
    rows = await ctx.services.registration.list_tokens(valid)
    return json_response({"registration_tokens": [registration_token_json(r) for r in rows]})


@routes.post(f"{_TOKENS}/new")
async def create_token(ctx: RequestContext) -> web.Response:
    """POST /_synapse/admin/v1/registration_tokens/new: create a token. Body (all
    optional): ``token`` (1-64 characters from ``A-Za-z0-9._~-``; else ``length`` random
    ones, default 16), ``uses_allowed`` (null: unlimited), ``expiry_time`` (milliseconds,
    not in the past; null: never) and ``reason`` (audit log; a Peyvand addition)."""
    admin = _admin(ctx)
    body = await ctx.body()
    token = body.data.get("token")
    if token is not None and not isinstance(token, str):
        raise invalid_param("token must be a string")
    length = body.data.get("length", DEFAULT_TOKEN_LENGTH)
    if type(length) is not int:
        raise invalid_param("length must be an integer")
    limits = _limit_changes(body)
    reason = body.str("reason", None)
    row = await ctx.services.registration.create_token(
        token,
        length=length,
        uses_allowed=limits.get("uses_allowed"),
        expiry_time=limits.get("expiry_time"),
    )
    await ctx.services.audit.record(
        admin.user_id,
        AuditAction.TOKEN_ISSUED,
        audit_target(row.token),
        reason=reason,
        details={
            "kind": "registration_token",
            "generated": token is None,
            "length": len(row.token),
            **_limits(row),
        },
    )
    return json_response(registration_token_json(row))


@routes.get(f"{_TOKENS}/{{token}}")
async def get_token(ctx: RequestContext) -> web.Response:
    """GET /_synapse/admin/v1/registration_tokens/{token}: one token, with its ``pending``
    and ``completed`` counts; 404 ``M_NOT_FOUND`` if there is none."""
    _admin(ctx)
    row = await ctx.services.registration.get_token(ctx.path["token"])
    return json_response(registration_token_json(row))


@routes.put(f"{_TOKENS}/{{token}}")
async def update_token(ctx: RequestContext) -> web.Response:
    """PUT /_synapse/admin/v1/registration_tokens/{token}: change ``uses_allowed`` and/or
    ``expiry_time`` (each may be null); an empty body changes nothing. Answers the token;
    404 ``M_NOT_FOUND`` if there is none. ``reason`` is recorded in the audit log."""
    admin = _admin(ctx)
    body = await ctx.body()
    changes = _limit_changes(body)
    reason = body.str("reason", None)
    token = ctx.path["token"]
    row = await ctx.services.registration.update_token(token, changes)
    if changes:
        await ctx.services.audit.record(
            admin.user_id,
            AuditAction.TOKEN_UPDATED,
            audit_target(token),
            reason=reason,
            details={"kind": "registration_token", "changed": sorted(changes), **_limits(row)},
        )
    return json_response(registration_token_json(row))


@routes.delete(f"{_TOKENS}/{{token}}")
async def delete_token(ctx: RequestContext) -> web.Response:
    """DELETE /_synapse/admin/v1/registration_tokens/{token}: delete a token (answers
    ``{}``); 404 ``M_NOT_FOUND`` if there is none. Registrations already past the token
    stage still complete."""
    admin = _admin(ctx)
    token = ctx.path["token"]
    row = await ctx.services.registration.delete_token(token)
    await ctx.services.audit.record(
        admin.user_id,
        AuditAction.TOKEN_DELETED,
        audit_target(token),
        details={"kind": "registration_token", "completed": row.completed, **_limits(row)},
    )
    return json_response({})
