"""Client-Server API, "Rooms": creation, membership, sending, redaction and reading."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, LimitClass, RouteTable
from peyvand.api.validation import Body, query_int
from peyvand.errors import Errcode, MatrixError
from peyvand.services.rooms.creation import PRESETS, CreateRoomRequest
from peyvand.services.sync.filtering import parse_event_filter_param
from peyvand.services.timeline.event_creation import EventSpec, scoped_txn_id
from peyvand.types import EventID, JsonDict, RoomAlias, RoomID, ServerName, UserID

routes = RouteTable()


def _room_id(ctx: RequestContext) -> RoomID:
    room_id = ctx.path["roomId"]
    if not room_id.startswith("!"):
        raise MatrixError(Errcode.INVALID_PARAM, f"Invalid room ID: {room_id}")
    return RoomID(room_id)


async def _content(ctx: RequestContext) -> dict[str, object]:
    return (await ctx.body()).data


# Client-Server API "Voice over IP": the events of a call.
_CALL_EVENT_TYPES = frozenset(
    {
        "m.call.invite",
        "m.call.candidates",
        "m.call.answer",
        "m.call.select_answer",
        "m.call.reject",
        "m.call.negotiate",
        "m.call.sdp_stream_metadata_changed",
        "m.call.hangup",
    }
)


def send_limit_class(params: Mapping[str, str]) -> LimitClass:
    """A call's events (Client-Server API "Voice over IP") are counted in a bucket of their
    own, not against the limit meant for messages: a call's candidates, answer and hangup
    come in bursts, and a call that hits a limit fails. The bucket is finite, so they
    cannot flood a room either."""
    return "calls" if params.get("eventType", "") in _CALL_EVENT_TYPES else "default"


@routes.post(f"{CLIENT_V3}/createRoom", rate_limited=True)
async def create_room(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/createRoom"""
    body = await ctx.body()
    initial_state = []
    for item in body.list("initial_state", []):
        if not isinstance(item, dict):
            raise MatrixError(Errcode.BAD_JSON, "initial_state entries must be objects")
        entry = Body(item)
        spec = EventSpec(entry.str("type"), entry.dict("content"), entry.str("state_key", ""))
        ctx.services.disappearing.check_client_event(spec)
        initial_state.append(spec)
    request = CreateRoomRequest(
        creator=ctx.user.user_id,
        visibility=body.one_of("visibility", ("public", "private"), "private"),
        preset=body.one_of("preset", PRESETS, None),
        name=body.str("name", None),
        topic=body.str("topic", None),
        invite=tuple(UserID(u) for u in body.str_list("invite", [])),
        is_direct=body.bool("is_direct", False),
        room_version=body.str("room_version", None),
        creation_content=body.dict("creation_content", {}),
        initial_state=tuple(initial_state),
        power_level_content_override=body.dict("power_level_content_override", None),
        room_alias_name=body.str("room_alias_name", None),
        appservice=ctx.user.appservice,
    )
    room_id = await ctx.services.rooms.create_room(request)
    return json_response({"room_id": room_id})


def _join_content(body: Mapping[str, Any]) -> JsonDict | None:
    """The keys of a join request's body kept in the member event (as Synapse keeps
    them): all but ``reason`` (added on its own) and ``third_party_signed``."""
    extra = {k: v for k, v in body.items() if k not in ("reason", "third_party_signed")}
    return extra or None


def _via(ctx: RequestContext) -> list[ServerName]:
    """The servers to join or knock through (``via``, and the older ``server_name``)."""
    query = ctx.request.query
    return [ServerName(s) for s in (*query.getall("via", []), *query.getall("server_name", []))]


@routes.post(f"{CLIENT_V3}/join/{{roomIdOrAlias}}", rate_limited=True)
async def join_by_id_or_alias(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/join/{roomIdOrAlias}"""
    target = ctx.path["roomIdOrAlias"]
    body = await ctx.body()
    servers = _via(ctx)
    if target.startswith("#"):
        found = await ctx.services.directory.get_alias(RoomAlias(target))
        room_id = RoomID(found["room_id"])
        servers += found["servers"]
    else:
        room_id = await ctx.services.rooms.resolve_room(target)
    await ctx.services.membership.join(
        room_id,
        ctx.user.user_id,
        body.str("reason", None),
        servers=servers,
        content=_join_content(body.data),
    )
    return json_response({"room_id": room_id})


@routes.post(f"{CLIENT_V3}/knock/{{roomIdOrAlias}}", rate_limited=True)
async def knock(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/knock/{roomIdOrAlias}"""
    target = ctx.path["roomIdOrAlias"]
    body = await ctx.body()
    servers = _via(ctx)
    if target.startswith("#"):
        found = await ctx.services.directory.get_alias(RoomAlias(target))
        room_id = RoomID(found["room_id"])
        servers += found["servers"]
    else:
        room_id = await ctx.services.rooms.resolve_room(target)
    await ctx.services.membership.knock(
        room_id, ctx.user.user_id, body.str("reason", None), servers=servers
    )
    return json_response({"room_id": room_id})


@routes.post(f"{CLIENT_V3}/rooms/{{roomId}}/join", rate_limited=True)
async def join_room(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/rooms/{roomId}/join"""
    room_id = _room_id(ctx)
    body = await ctx.body()
    servers = [ServerName(s) for s in ctx.request.query.getall("via", [])]
    await ctx.services.membership.join(
        room_id,
        ctx.user.user_id,
        body.str("reason", None),
        servers=servers,
        content=_join_content(body.data),
    )
    return json_response({"room_id": room_id})


@routes.post(f"{CLIENT_V3}/rooms/{{roomId}}/leave", rate_limited=True)
async def leave_room(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/rooms/{roomId}/leave"""
    body = await ctx.body()
    await ctx.services.membership.leave(_room_id(ctx), ctx.user.user_id, body.str("reason", None))
    return json_response({})


@routes.post(f"{CLIENT_V3}/rooms/{{roomId}}/forget")
async def forget_room(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/rooms/{roomId}/forget"""
    await ctx.services.membership.forget(_room_id(ctx), ctx.user.user_id)
    return json_response({})


async def _target_action(ctx: RequestContext, action: str) -> web.Response:
    body = await ctx.body()
    target = UserID(body.str("user_id"))
    reason = body.str("reason", None)
    membership = ctx.services.membership
    room_id, sender = _room_id(ctx), ctx.user.user_id
    if action == "invite":
        await membership.invite(room_id, sender, target, reason)
    elif action == "kick":
        await membership.kick(room_id, sender, target, reason)
    elif action == "ban":
        await membership.ban(room_id, sender, target, reason)
    else:
        await membership.unban(room_id, sender, target, reason)
    return json_response({})


@routes.post(f"{CLIENT_V3}/rooms/{{roomId}}/invite", rate_limited=True)
async def invite(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/rooms/{roomId}/invite"""
    return await _target_action(ctx, "invite")


@routes.post(f"{CLIENT_V3}/rooms/{{roomId}}/kick", rate_limited=True)
async def kick(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/rooms/{roomId}/kick"""
    return await _target_action(ctx, "kick")


@routes.post(f"{CLIENT_V3}/rooms/{{roomId}}/ban", rate_limited=True)
async def ban(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/rooms/{roomId}/ban"""
    return await _target_action(ctx, "ban")


@routes.post(f"{CLIENT_V3}/rooms/{{roomId}}/unban", rate_limited=True)
async def unban(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/rooms/{roomId}/unban"""
    return await _target_action(ctx, "unban")


@routes.get(f"{CLIENT_V3}/joined_rooms")
async def joined_rooms(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/joined_rooms"""
    rooms = await ctx.services.rooms.joined_rooms(ctx.user.user_id)
    return json_response({"joined_rooms": rooms})


@routes.put(
    f"{CLIENT_V3}/rooms/{{roomId}}/send/{{eventType}}/{{txnId}}",
    rate_limited=True,
    limit_class_of=send_limit_class,
)
async def send_message(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}"""
    room_id = _room_id(ctx)
    content = await _content(ctx)
    user = ctx.user
    event_type = ctx.path["eventType"]
    spec = EventSpec(event_type, content, origin_server_ts=ctx.origin_server_ts)
    ctx.services.disappearing.check_client_event(spec)
    event = await ctx.services.events.send(
        room_id,
        user.user_id,
        spec,
        txn=(user.user_id, user.device_id, scoped_txn_id(room_id, event_type, ctx.path["txnId"])),
    )
    return json_response({"event_id": event.pdu.event_id})


@routes.post(
    f"{CLIENT_V3}/rooms/{{roomId}}/send/{{eventType}}",
    rate_limited=True,
    limit_class_of=send_limit_class,
)
async def post_message(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/rooms/{roomId}/send/{eventType}: a send without a
    transaction ID (not in the spec, which only has the PUT; Synapse and sytest use it),
    so a retry sends again."""
    spec = EventSpec(
        ctx.path["eventType"], await _content(ctx), origin_server_ts=ctx.origin_server_ts
    )
    ctx.services.disappearing.check_client_event(spec)
    event = await ctx.services.events.send(_room_id(ctx), ctx.user.user_id, spec)
    return json_response({"event_id": event.pdu.event_id})


@routes.post(f"{CLIENT_V3}/rooms/{{roomId}}/upgrade", rate_limited=True)
async def upgrade_room(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/rooms/{roomId}/upgrade: replace the room by one of
    ``new_version`` (``services.room_upgrade``). ``additional_creators`` (v1.16) goes as
    sent: the service checks it only for versions that have additional creators."""
    room_id = _room_id(ctx)
    body = await ctx.body()
    new_room = await ctx.services.room_upgrade.upgrade(
        ctx.user.user_id,
        room_id,
        body.str("new_version"),
        body.data.get("additional_creators"),
    )
    return json_response({"replacement_room": new_room})


async def _put_state(ctx: RequestContext, state_key: str) -> web.Response:
    room_id = _room_id(ctx)
    content = await _content(ctx)
    spec = EventSpec(
        ctx.path["eventType"], content, state_key, origin_server_ts=ctx.origin_server_ts
    )
    ctx.services.disappearing.check_client_event(spec)
    event_id = await ctx.services.state_events.put_state(room_id, ctx.user.user_id, spec)
    return json_response({"event_id": event_id})


@routes.put(f"{CLIENT_V3}/rooms/{{roomId}}/state/{{eventType}}/{{stateKey}}", rate_limited=True)
async def put_state(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}"""
    return await _put_state(ctx, ctx.path["stateKey"])


@routes.put(f"{CLIENT_V3}/rooms/{{roomId}}/state/{{eventType}}", rate_limited=True)
async def put_state_empty_key(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}"""
    return await _put_state(ctx, "")


@routes.put(f"{CLIENT_V3}/rooms/{{roomId}}/state/{{eventType}}/", rate_limited=True)
async def put_state_empty_key_slash(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/ (the empty state key as an
    empty last segment, as matrix-js-sdk and others send it)"""
    return await _put_state(ctx, "")


@routes.put(f"{CLIENT_V3}/rooms/{{roomId}}/redact/{{eventId}}/{{txnId}}", rate_limited=True)
async def redact(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}

    Who may redact what is decided where every local event is created, whichever
    endpoint sends the m.room.redaction (``EventCreationService._check_redaction``).
    """
    room_id = _room_id(ctx)
    body = await ctx.body()
    user = ctx.user
    target_id = EventID(ctx.path["eventId"])
    content: dict[str, object] = {}
    if (reason := body.str("reason", None)) is not None:
        content["reason"] = reason
    event = await ctx.services.events.send(
        room_id,
        user.user_id,
        EventSpec("m.room.redaction", content, redacts=target_id),
        txn=(
            user.user_id,
            user.device_id,
            scoped_txn_id(room_id, "m.room.redaction", ctx.path["txnId"], target_id),
        ),
    )
    return json_response({"event_id": event.pdu.event_id})


@routes.get(f"{CLIENT_V3}/rooms/{{roomId}}/event/{{eventId}}")
async def get_event(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}"""
    event = await ctx.services.room_events.get_event(
        ctx.user, _room_id(ctx), EventID(ctx.path["eventId"])
    )
    return json_response(event)


@routes.get(f"{CLIENT_V3}/rooms/{{roomId}}/state")
async def get_state(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/rooms/{roomId}/state"""
    return json_response(await ctx.services.room_events.get_state(ctx.user, _room_id(ctx)))


async def _get_state_event(ctx: RequestContext, state_key: str) -> web.Response:
    event = await ctx.services.room_events.get_state_event(
        ctx.user, _room_id(ctx), ctx.path["eventType"], state_key
    )
    if ctx.query.get("format") == "event":
        return json_response((await ctx.services.room_events.serialize([event], ctx.user))[0])
    return json_response(dict(event.pdu.content))


@routes.get(f"{CLIENT_V3}/rooms/{{roomId}}/state/{{eventType}}/{{stateKey}}")
async def get_state_event(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}"""
    return await _get_state_event(ctx, ctx.path["stateKey"])


@routes.get(f"{CLIENT_V3}/rooms/{{roomId}}/state/{{eventType}}")
async def get_state_event_empty_key(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}"""
    return await _get_state_event(ctx, "")


@routes.get(f"{CLIENT_V3}/rooms/{{roomId}}/state/{{eventType}}/")
async def get_state_event_empty_key_slash(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/ (empty state key)"""
    return await _get_state_event(ctx, "")


@routes.get(f"{CLIENT_V3}/rooms/{{roomId}}/messages")
async def messages(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/rooms/{roomId}/messages"""
    direction = ctx.query.get("dir", "b")
    if direction not in ("b", "f"):
        raise MatrixError(Errcode.INVALID_PARAM, "dir must be 'b' or 'f'")
    raw_filter = ctx.query.get("filter")
    page = await ctx.services.room_events.messages(
        ctx.user,
        _room_id(ctx),
        from_token=ctx.query.get("from"),
        to_token=ctx.query.get("to"),
        backwards=direction == "b",
        limit=query_int(ctx.query, "limit", 10, minimum=0),
        event_filter=parse_event_filter_param(raw_filter) if raw_filter else None,
    )
    response: dict[str, object] = {"chunk": page.chunk, "start": page.start}
    if page.end is not None:
        response["end"] = page.end
    if page.state:
        response["state"] = page.state
    return json_response(response)


@routes.get(f"{CLIENT_V3}/rooms/{{roomId}}/context/{{eventId}}")
async def context(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}"""
    raw_filter = ctx.query.get("filter")
    result = await ctx.services.room_events.context(
        ctx.user,
        _room_id(ctx),
        EventID(ctx.path["eventId"]),
        limit=query_int(ctx.query, "limit", 10, minimum=0),
        event_filter=parse_event_filter_param(raw_filter) if raw_filter else None,
    )
    return json_response(result)


@routes.get(f"{CLIENT_V3}/rooms/{{roomId}}/members")
async def members(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/rooms/{roomId}/members"""
    chunk = await ctx.services.room_events.members(
        ctx.user,
        _room_id(ctx),
        membership=ctx.query.get("membership"),
        not_membership=ctx.query.get("not_membership"),
    )
    return json_response({"chunk": chunk})


@routes.get(f"{CLIENT_V3}/rooms/{{roomId}}/joined_members")
async def joined_members(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/rooms/{roomId}/joined_members"""
    return json_response(await ctx.services.room_events.joined_members(ctx.user, _room_id(ctx)))
