"""Invites of local users from other servers (Server-Server API, "Inviting to a room",
``PUT /invite`` v2): checked, rate-limited per inviting server and user, countersigned, and,
for a room this server is not in, kept with the room's stripped state for the user to
join or reject (``RemoteInviteStore``). A user's invite policy may refuse an invite or hold
it as a message request until the user releases it."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from peyvand.errors import Errcode, MatrixError
from peyvand.events.pdu import Pdu
from peyvand.events.received import InvalidPdu, check_content_hash_or_redact, parse_pdu
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS
from peyvand.events.serialize import well_formed_stripped_state
from peyvand.events.signing import SigningKey, sign_event
from peyvand.federation.keyring import Keyring
from peyvand.services.federation.federation_pdus import supported_room_version
from peyvand.services.federation.invite_policy import InvitePolicyService
from peyvand.services.federation.outbound_membership import MAX_INVITE_STATE
from peyvand.services.federation.received_events import FederationEventHandler
from peyvand.services.federation.signatures import check_pdu_signatures
from peyvand.services.rooms.policy_lists import PolicyListService
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.remote_invites import RemoteInvite, RemoteInviteStore
from peyvand.types import EventID, JsonDict, RoomID, ServerName, UserID, server_name_of


class RemoteInviteLimiter:
    """Invite-spam limits (``[interconnect]``): token buckets per inviting server and per
    inviting remote user, each refilling at its per-minute rate and bursting to as many.
    ``check`` takes a token from both or, if either is empty, from neither and raises 429
    ``M_LIMIT_EXCEEDED`` with ``retry_after_ms``. Full buckets are forgotten past
    ``max_keys`` so memory stays bounded."""

    def __init__(
        self,
        per_server_per_minute: int,
        per_user_per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._limits = {"s": float(per_server_per_minute), "u": float(per_user_per_minute)}
        self._clock = clock
        self._max_keys = max_keys
        # (kind, key) -> (tokens, last update)
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def _tokens(self, bucket: tuple[str, str], now: float) -> float:
        burst = self._limits[bucket[0]]
        tokens, last = self._buckets.get(bucket, (burst, now))
        return min(burst, tokens + (now - last) * burst / 60.0)

    def check(self, server: ServerName, user: str) -> None:
        now = self._clock()
        buckets = [("s", server), ("u", user)]
        levels = [self._tokens(b, now) for b in buckets]
        wait = max(
            ((1.0 - t) * 60.0 / self._limits[b[0]] for b, t in zip(buckets, levels, strict=True)),
            default=0.0,
        )
        if wait > 0:
            raise MatrixError(
                Errcode.LIMIT_EXCEEDED,
                "Too many invites from this server or user",
                retry_after_ms=math.ceil(wait * 1000),
            )
        for bucket, tokens in zip(buckets, levels, strict=True):
            self._buckets[bucket] = (tokens - 1.0, now)
        if len(self._buckets) > self._max_keys:
            for bucket in [b for b in self._buckets if self._tokens(b, now) >= self._limits[b[0]]]:
                del self._buckets[bucket]


class InviteInbox:
    def __init__(
        self,
        server_name: ServerName,
        keyring: Keyring,
        state: StateService,
        handler: FederationEventHandler,
        invites: RemoteInviteStore,
        signing_key: SigningKey,
        allocate_stream: Callable[[], int],
        abandon_stream: Callable[[int], None],
        user_exists: Callable[[UserID], Awaitable[bool]],
        on_remote_membership: Callable[[UserID, RoomID, str, int], None],
        invite_policy: InvitePolicyService,
        policy_lists: PolicyListService,
        on_remote_invite: Callable[[Pdu, int, list[JsonDict]], Awaitable[None]],
    ) -> None:
        """``invite_policy`` applies users' choices for invites from other servers
        (interconnect opt-in) and its rate limits; the moderation ``policy_lists`` refuse
        the invites they ban (inviter, invitee or room). ``on_remote_invite`` pushes an
        invite kept and shown when it comes (not held) to the invitee's pushers: one
        released later was released by the invitee and is not pushed. An events position
        taken from ``allocate_stream`` goes, once stored, to ``on_remote_membership``, or
        else to ``abandon_stream``: until it does no higher position reaches /sync
        (issue 21)."""
        self._server_name = server_name
        self._keyring = keyring
        self._state = state
        self._handler = handler
        self._invites = invites
        self._signing_key = signing_key
        self._allocate_stream = allocate_stream
        self._abandon_stream = abandon_stream
        self._user_exists = user_exists
        self._on_remote_membership = on_remote_membership
        self._invite_policy = invite_policy
        self._policy_lists = policy_lists
        self._on_remote_invite = on_remote_invite
        # Told of each invite kept and shown, when it comes or is released (application
        # services).
        self.listeners: list[Callable[[Pdu, int], None]] = []
        limits = invite_policy.config
        self._invite_limiter = RemoteInviteLimiter(
            limits.remote_invites_per_server_per_minute,
            limits.remote_invites_per_user_per_minute,
        )

    async def on_invite(
        self, origin: ServerName, room_id: RoomID, event_id: EventID, body: Any
    ) -> JsonDict:
        """PUT /invite v2: a user of ``origin`` invites one of our users; countersign the
        invite and, for a room we are not in, keep it (with the stripped state) for the
        user to join or reject.

        The user's invite policy (``services/federation/invite_policy.py``) may refuse it (403
        ``M_INVITE_BLOCKED``, Client-Server API "Invite permission") or have it held as a
        message request: kept, but not among the user's rooms until released."""
        if not isinstance(body, dict):
            raise MatrixError(Errcode.BAD_JSON, "Body must be a JSON object")
        version = supported_room_version(body.get("room_version"))
        try:
            pdu = parse_pdu(body.get("event"), version, room_id=room_id)
        except InvalidPdu as exc:
            raise MatrixError(Errcode.BAD_JSON, str(exc)) from exc
        if pdu.event_id != event_id:
            raise MatrixError(Errcode.BAD_JSON, "The event ID does not match the URL")
        target = UserID(pdu.state_key or "")
        if pdu.type != "m.room.member" or pdu.membership != "invite":
            raise MatrixError(Errcode.BAD_JSON, "Not an invite event")
        if server_name_of(pdu.sender) != origin:
            raise MatrixError(Errcode.FORBIDDEN, "The inviter is not on the requesting server")
        # A banned inviter (or server: the inviter's), invitee or room: 403.
        await self._policy_lists.check_invite(room_id, pdu.sender, target)
        # 429 before anything is checked further, signed or stored.
        self._invite_limiter.check(origin, pdu.sender)
        if server_name_of(target) != self._server_name or not await self._user_exists(target):
            raise MatrixError(Errcode.NOT_FOUND, "No such user here")
        (valid,) = await check_pdu_signatures(self._keyring, [pdu])
        if not valid:
            raise MatrixError(Errcode.FORBIDDEN, "The invite is not validly signed")
        if not check_content_hash_or_redact(pdu)[1]:
            raise MatrixError(Errcode.BAD_JSON, "The invite's content hash does not match")
        known = await self._state.get_room(room_id)
        if known is not None and not await self._handler.origin_allowed(origin, known):
            raise MatrixError(Errcode.FORBIDDEN, "Server is denied by the room's ACL")
        # Raises M_INVITE_BLOCKED before anything is signed or stored.
        held = await self._invite_policy.admit_remote_invite(target, room_id)
        signed = sign_event(pdu.data, version, self._server_name, self._signing_key)
        stripped = body.get("invite_room_state", [])
        if not isinstance(stripped, list):
            stripped = []
        stripped = well_formed_stripped_state(stripped[:MAX_INVITE_STATE])
        if known is None or not known.takes_part(self._server_name):
            # (In a room we are in, the invite arrives as room state and is not held.)
            stream = self._allocate_stream()
            try:
                await self._invites.put(
                    RemoteInvite(
                        room_id,
                        target,
                        pdu.event_id,
                        version.identifier,
                        pdu.sender,
                        "invite",
                        stream,
                        dict(signed),
                        stripped,
                        held,
                    )
                )
            except BaseException:
                self._abandon_stream(stream)
                raise
            if held:
                self._abandon_stream(stream)  # stored but held: nothing to announce
            else:
                self._shown(pdu, stream)
                await self._on_remote_invite(pdu, stream, stripped)
        return {"event": signed}

    async def release_invites(self, user_id: UserID, room_id: RoomID | None = None) -> list[RoomID]:
        """Release the user's held invites (message requests): ``room_id``'s, or all of
        them. Each becomes an ordinary remote invite, newly in the user's /sync; the rooms
        released come back."""
        released = []
        for invite in await self._invites.held_for(user_id):
            if room_id is not None and invite.room_id != room_id:
                continue
            stream = self._allocate_stream()
            try:
                shown = await self._invites.release(invite.room_id, user_id, stream)
            except BaseException:
                self._abandon_stream(stream)
                raise
            if not shown:
                self._abandon_stream(stream)
                continue
            version = KNOWN_ROOM_VERSIONS[invite.room_version]
            self._shown(Pdu(invite.pdu, invite.event_id, version), stream)
            released.append(invite.room_id)
        return released

    def _shown(self, pdu: Pdu, stream: int) -> None:
        """An invite from another server now among the invitee's rooms at ``stream``,
        kept so when it came or released from the held later: the invitee's /sync and
        the ``listeners`` (application services) are told."""
        target = UserID(pdu.state_key or "")
        self._on_remote_membership(target, pdu.room_id, "invite", stream)
        for listener in self.listeners:
            listener(pdu, stream)
