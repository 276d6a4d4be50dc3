"""The internal API between the processes of a deployment (issue 21, "Forwarding").

Mounted only when ``[workers]`` is configured, on every process; the reverse proxy
answers 404 for ``/_peyvand/internal/`` (``peyvand deployment nginx``), and each request
must carry the deployment's secret (``auth="worker"``, checked in ``api.server``).

- ``POST /_peyvand/internal/v1/events/send``: ``EventCreationService.send`` for another
  process (``services.timeline.forwarding.send_to_json``; ``"countersign": true`` for an
  invite of a remote user, countersigned from here); answers ``{"event": ...}``.
- ``POST /_peyvand/internal/v1/rooms/create``: ``EventCreationService.create_room``;
  answers ``{"room_id": ..., "events": [...]}``.
- ``POST /_peyvand/internal/v1/federation/pdus``: received PDUs of this writer's rooms
  (``services.federation.forwarded_pdus``); answers ``{"pdus": {event_id: result}}``.
- ``POST /_peyvand/internal/v1/federation/membership``: a join, knock or invite
  rejection of a room on other servers that this writer writes
  (``services.federation.forwarded_memberships``); answers ``{"position"}``, the
  membership's events stream position (null if none).
- ``POST /_peyvand/internal/v1/federation/edus``: received receipts and to-device
  messages, taken in by the primary writer (``services.federation.forwarded_edus``);
  answers ``{}``, or 503 from a writer that is not the primary now.

A Matrix error is answered as to a client, for the caller to raise unchanged. Bodies come
from another process of the deployment: they are parsed without the limits held to
clients' (a client's event, checked when it came in, is carried inside an envelope).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.errors import Errcode, MatrixError
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS
from peyvand.services.federation.forwarded_edus import EDUS_PATH
from peyvand.services.federation.forwarded_memberships import (
    MEMBERSHIP_PATH,
    OPERATIONS,
    servers_field,
)
from peyvand.services.federation.forwarded_pdus import PDUS_PATH, forwarded_body
from peyvand.services.timeline.forwarding import (
    CREATE_ROOM_PATH,
    SEND_PATH,
    spec_from_json,
    stored_to_json,
    txn_from_json,
)
from peyvand.types import RoomID, ServerName, UserID

routes = RouteTable()


async def _body(ctx: RequestContext) -> dict[str, Any]:
    try:
        body = orjson.loads(await ctx.request.read())
    except orjson.JSONDecodeError:
        raise MatrixError(Errcode.NOT_JSON, "Content not JSON.") from None
    if not isinstance(body, dict):
        raise MatrixError(Errcode.NOT_JSON, "Content must be a JSON object.")
    return body


def _string(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise MatrixError(Errcode.BAD_JSON, f"'{key}' must be a string")
    return value


@routes.post(SEND_PATH, auth="worker")
async def send_event(ctx: RequestContext) -> web.Response:
    body = await _body(ctx)
    # An invite of a remote user: countersigned by the invitee's server from here.
    countersign = (
        ctx.services.federation.outbound_membership.invite_remote
        if body.get("countersign") is True
        else None
    )
    event = await ctx.services.events.send(
        RoomID(_string(body, "room_id")),
        UserID(_string(body, "sender")),
        spec_from_json(body.get("event")),
        txn=txn_from_json(body.get("txn")),
        unless_identical=body.get("unless_identical") is True,
        countersign=countersign,
        forwarded=True,
    )
    return json_response({"event": stored_to_json(event)})


@routes.post(CREATE_ROOM_PATH, auth="worker")
async def create_room(ctx: RequestContext) -> web.Response:
    body = await _body(ctx)
    version = KNOWN_ROOM_VERSIONS.get(_string(body, "room_version"))
    if version is None:
        raise MatrixError(Errcode.UNSUPPORTED_ROOM_VERSION, "Unknown room version")
    create_content, initial, room_id = (
        body.get("create_content"),
        body.get("initial"),
        body.get("room_id"),
    )
    if (
        not isinstance(create_content, dict)
        or not isinstance(initial, list)
        or not isinstance(room_id, str | None)
    ):
        raise MatrixError(Errcode.BAD_JSON, "Malformed room creation")
    created, events = await ctx.services.events.create_room(
        version,
        UserID(_string(body, "creator")),
        create_content,
        [spec_from_json(spec) for spec in initial],
        room_id=None if room_id is None else RoomID(room_id),
        is_public=body.get("is_public") is True,
        forwarded=True,
    )
    return json_response({"room_id": created, "events": [stored_to_json(e) for e in events]})


@routes.post(PDUS_PATH, auth="worker")
async def receive_pdus(ctx: RequestContext) -> web.Response:
    origin, pdus = forwarded_body(await _body(ctx))
    return json_response(await ctx.services.federation.transactions.receive_forwarded(origin, pdus))


@routes.post(EDUS_PATH, auth="worker")
async def receive_edus(ctx: RequestContext) -> web.Response:
    body = await _body(ctx)
    origin, edus = body.get("origin"), body.get("edus")
    if not isinstance(origin, str) or not isinstance(edus, list):
        raise MatrixError(Errcode.BAD_JSON, "'origin' must be a string and 'edus' a list")
    await ctx.services.federation.edus.receive_forwarded(ServerName(origin), edus)
    return json_response({})


@routes.post(MEMBERSHIP_PATH, auth="worker")
async def remote_membership(ctx: RequestContext) -> web.Response:
    body = await _body(ctx)
    op = body.get("op")
    room_id, user_id = RoomID(_string(body, "room_id")), UserID(_string(body, "user_id"))
    reason = body.get("reason")
    if not isinstance(reason, str | None):
        raise MatrixError(Errcode.BAD_JSON, "'reason' must be a string")
    remote = ctx.services.federation.outbound_membership
    if op == "join":
        content = body.get("content")
        if not isinstance(content, dict):
            raise MatrixError(Errcode.BAD_JSON, "'content' must be an object")
        remote.refuse_unless_written_here(room_id)
        joined_reason = content.get("reason")
        # The whole join again here: one remote join of a room at a time, and a room
        # joined meanwhile (a retry, another user) joined locally instead.
        await ctx.services.membership.join(
            room_id,
            user_id,
            joined_reason if isinstance(joined_reason, str) else None,
            servers_field(body.get("servers")),
        )
    elif op == "knock":
        servers = servers_field(body.get("servers"))
        await remote.knock_remote(room_id, user_id, servers, reason, forwarded=True)
    elif op == "reject":
        await remote.reject_invite(room_id, user_id, reason, forwarded=True)
    else:
        raise MatrixError(Errcode.BAD_JSON, f"'op' must be one of {', '.join(OPERATIONS)}")
    return json_response({"position": await remote.membership_position(room_id, user_id)})


INTERNAL_ROUTE_TABLES: list[RouteTable] = [routes]
