"""Interconnect opt-in (docs/compliance.md): a user's policy for invites from other servers,
and the message requests (held invites) it keeps. Peyvand's own endpoints, beside the
Client-Server API's "Invite permission" module."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.services.federation.invite_policy import INVITE_POLICIES, request_json
from peyvand.types import RoomID

routes = RouteTable()

_V1 = "/_peyvand/client/v1"


@routes.get(f"{_V1}/invite_requests")
async def list_requests(ctx: RequestContext) -> web.Response:
    """GET /_peyvand/client/v1/invite_requests: the user's open message requests, oldest
    first, as ``{"requests": [{"room_id", "inviter", "event_id", "ts", "invite_state"}]}``
    (``invite_state`` as in /sync's invited rooms)."""
    held = await ctx.services.invite_policy.requests(ctx.user.user_id)
    return json_response({"requests": [request_json(invite) for invite in held]})


@routes.post(f"{_V1}/invite_requests/{{roomId}}/accept")
async def accept_request(ctx: RequestContext) -> web.Response:
    """POST /_peyvand/client/v1/invite_requests/{roomId}/accept: make the request an
    ordinary invite, shown by /sync; the user can then join (or reject) it. 404
    ``M_NOT_FOUND`` if there is no open request for the room."""
    user_id = ctx.user.user_id
    room_id = RoomID(ctx.path["roomId"])
    await ctx.services.invite_policy.request(user_id, room_id)
    await ctx.services.federation.invite_inbox.release_invites(user_id, room_id)
    return json_response({})


@routes.post(f"{_V1}/invite_requests/{{roomId}}/reject")
async def reject_request(ctx: RequestContext) -> web.Response:
    """POST /_peyvand/client/v1/invite_requests/{roomId}/reject ``{"reason"?}``: reject the
    invite through the inviting server, like leaving an invited room. 404 ``M_NOT_FOUND``
    if there is no open request for the room."""
    user_id = ctx.user.user_id
    room_id = RoomID(ctx.path["roomId"])
    body = await ctx.body()
    reason = body.str("reason", None)
    await ctx.services.invite_policy.request(user_id, room_id)
    await ctx.services.federation.outbound_membership.reject_invite(room_id, user_id, reason)
    return json_response({})


@routes.get(f"{_V1}/invite_policy")
async def get_policy(ctx: RequestContext) -> web.Response:
    """GET /_peyvand/client/v1/invite_policy: ``{"policy", "default"}``, the user's policy
    (their choice, or the server's default) and the server's default."""
    service = ctx.services.invite_policy
    policy = await service.policy_of(ctx.user.user_id)
    return json_response({"policy": policy, "default": service.default_policy})


@routes.put(f"{_V1}/invite_policy")
async def set_policy(ctx: RequestContext) -> web.Response:
    """PUT /_peyvand/client/v1/invite_policy ``{"policy": "open" | "local-only" |
    "hold-remote"}``. Opting in (``open``) releases every open message request, as if
    each were accepted; answers ``{"policy", "released": [room IDs]}``."""
    body = await ctx.body()
    policy = body.one_of("policy", INVITE_POLICIES)
    user_id = ctx.user.user_id
    await ctx.services.invite_policy.set_policy(user_id, policy)
    released = []
    if policy == "open":
        released = await ctx.services.federation.invite_inbox.release_invites(user_id)
    return json_response({"policy": policy, "released": released})
