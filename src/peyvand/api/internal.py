"""The internal API between the processes of a deployment (issue 21, "Forwarding").

Mounted only when ``[workers]`` is configured, on every process; the reverse proxy
answers 404 for ``/_peyvand/internal/`` (``peyvand deployment nginx``), and each request
must carry the deployment's secret (``auth="worker"``, checked in ``api.server``).

- ``POST /_peyvand/internal/v1/events/send``: ``EventCreationService.send`` for another
  process (``services.timeline.forwarding.send_to_json``); answers ``{"event": ...}``.
- ``POST /_peyvand/internal/v1/rooms/create``: ``EventCreationService.create_room``;
  answers ``{"room_id": ..., "events": [...]}``.
- ``POST /_peyvand/internal/v1/federation/pdus``: received PDUs of this writer's rooms
  (``services.federation.forwarded_pdus``); answers ``{"pdus": {event_id: result}}``.

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
from peyvand.services.federation.forwarded_pdus import PDUS_PATH, forwarded_body
from peyvand.services.timeline.forwarding import (
    CREATE_ROOM_PATH,
    SEND_PATH,
    spec_from_json,
    stored_to_json,
    txn_from_json,
)
from peyvand.types import RoomID, UserID

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
    event = await ctx.services.events.send(
        RoomID(_string(body, "room_id")),
        UserID(_string(body, "sender")),
        spec_from_json(body.get("event")),
        txn=txn_from_json(body.get("txn")),
        unless_identical=body.get("unless_identical") is True,
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


INTERNAL_ROUTE_TABLES: list[RouteTable] = [routes]
