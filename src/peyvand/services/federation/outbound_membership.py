"""Membership in rooms on other servers, for local users (Server-Server API): joining
(through ``outbound_join.RemoteJoiner``), knocking (``make_knock`` / ``send_knock``),
rejecting an invite (``make_leave`` / ``send_leave``), inviting a remote user
(``/invite`` v2), and resolving another server's room alias (``/query/directory``). The
remote invites and knocks a user holds are kept in ``RemoteInviteStore``."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from peyvand.errors import Errcode, MatrixError
from peyvand.events.builder import finalize_pdu
from peyvand.events.pdu import Pdu
from peyvand.events.received import InvalidPdu, parse_pdu
from peyvand.events.redaction import redact
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS
from peyvand.events.serialize import well_formed_stripped_state
from peyvand.events.signing import SigningKey
from peyvand.federation.client import FederationError, FederationHttpError
from peyvand.federation.keyring import Keyring
from peyvand.federation.transport import FederationTransport
from peyvand.services.federation.errors import is_refusal, join_refusal, refusal
from peyvand.services.federation.federation_pdus import federation_pdu, stripped_state
from peyvand.services.federation.forwarded_memberships import ForwardedMemberships, not_here
from peyvand.services.federation.outbound_join import RemoteJoiner
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.storage.remote_invites import RemoteInvite, RemoteInviteStore
from peyvand.types import JsonDict, RoomAlias, RoomID, ServerName, UserID, server_name_of

logger = logging.getLogger(__name__)

MAX_INVITE_STATE: Final = 50


class OutboundMembership:
    """``MembershipService``'s ``RemoteMemberships``."""

    def __init__(
        self,
        server_name: ServerName,
        transport: FederationTransport,
        keyring: Keyring,
        allows: Callable[[ServerName], bool],
        state: StateService,
        joiner: RemoteJoiner,
        invites: RemoteInviteStore,
        signing_key: SigningKey,
        allocate_stream: Callable[[], int],
        abandon_stream: Callable[[int], None],
        on_remote_membership: Callable[[UserID, RoomID, str, int], None],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """A remote invite's or knock's new membership is stored at an events position
        from ``allocate_stream`` and then told to ``on_remote_membership``, or the
        position given back to ``abandon_stream`` if it cannot be stored (issue 21)."""
        self._server_name = server_name
        self._transport = transport
        self._keyring = keyring
        self._allows = allows
        self._state = state
        self._joiner = joiner
        self._invites = invites
        self._signing_key = signing_key
        self._allocate_stream = allocate_stream
        self._abandon_stream = abandon_stream
        self._on_remote_membership = on_remote_membership
        self._clock = clock
        self._forwarded: ForwardedMemberships | None = None

    def forward_rooms(self, forwarded: ForwardedMemberships) -> None:
        """A deployment: joins, knocks and invite rejections of rooms another event
        writer writes are made by it (``services.federation.forwarded_memberships``)."""
        self._forwarded = forwarded

    def refuse_unless_written_here(self, room_id: RoomID) -> None:
        """A membership forwarded here for a room another writer writes now: 503 (the
        asking process tries again), never forwarded on."""
        if self._forwarded is not None and self._forwarded.writer_elsewhere(room_id) is not None:
            raise not_here(room_id)

    async def _done_elsewhere(
        self, op: str, room_id: RoomID, user_id: UserID, forwarded: bool, **fields: Any
    ) -> bool:
        """Whether the room's writer, another process, made the membership change."""
        writer = None if self._forwarded is None else self._forwarded.writer_elsewhere(room_id)
        if writer is None or self._forwarded is None:
            return False
        if forwarded:
            raise not_here(room_id)
        await self._forwarded.forward(writer, op, room_id, user_id, **fields)
        return True

    async def membership_position(self, room_id: RoomID, user_id: UserID) -> int | None:
        """The events stream position of the user's latest membership: their member
        event in the room's state, or their remote invite's row (a knock, a rejection),
        whichever is newer (a room left long ago keeps its old member event)."""
        snapshot = await self._state.get_room(room_id)
        event_id = None if snapshot is None else snapshot.state.get(("m.room.member", user_id))
        event = None if event_id is None else await self._state.get_event(event_id)
        invite = await self._invites.get(room_id, user_id)
        positions = [p.stream_ordering for p in (event, invite) if p is not None]
        return max(positions, default=None)

    async def join_remote(
        self,
        room_id: RoomID,
        user_id: UserID,
        servers: Sequence[ServerName],
        content: JsonDict,
    ) -> None:
        """Join a room this server is not in, through one of ``servers`` (by the room's
        writer: a join forwarded to it runs its ``MembershipService.join`` again)."""
        if await self._done_elsewhere(
            "join", room_id, user_id, False, servers=list(servers), content=content
        ):
            return
        await self._joiner.join(room_id, user_id, [s for s in servers if self._allows(s)], content)

    async def query_directory(self, alias: RoomAlias) -> JsonDict:
        """Another server's alias (GET /query/directory on that server)."""
        server = server_name_of(alias)
        if not self._allows(server):
            raise MatrixError(Errcode.NOT_FOUND, f"Room alias {alias} not found")
        try:
            answer = await self._transport.query_directory(server, alias)
        except FederationHttpError as exc:
            if exc.status == 404:
                raise MatrixError(Errcode.NOT_FOUND, f"Room alias {alias} not found") from exc
            raise MatrixError(Errcode.UNKNOWN, f"{server}: {exc}", status=502) from exc
        except FederationError as exc:
            raise MatrixError(Errcode.UNKNOWN, f"{server}: {exc}", status=502) from exc
        room_id = answer.get("room_id") if isinstance(answer, dict) else None
        servers = answer.get("servers") if isinstance(answer, dict) else None
        if not isinstance(room_id, str) or not isinstance(servers, list):
            raise MatrixError(Errcode.UNKNOWN, f"{server} gave a bad alias answer", status=502)
        return {"room_id": room_id, "servers": [s for s in servers if isinstance(s, str)]}

    async def invite_remote(self, pdu: Pdu, snapshot: RoomSnapshot) -> Pdu:
        """Send a built invite of a remote user to their server (PUT /invite v2); the
        invite countersigned by that server, to be stored."""
        target = pdu.state_key or ""
        destination = server_name_of(target)
        if not self._allows(destination):
            raise MatrixError(Errcode.FORBIDDEN, "Federation with that server is not allowed")
        stripped = await stripped_state(self._state, snapshot)
        body = {
            "event": federation_pdu(pdu),
            "room_version": snapshot.room_version.identifier,
            "invite_room_state": stripped,
        }
        try:
            response = await self._transport.invite(destination, pdu.room_id, pdu.event_id, body)
        except FederationHttpError as exc:
            if is_refusal(exc):  # e.g. 403 M_INVITE_BLOCKED, passed on as it is
                raise refusal(exc) from exc
            raise MatrixError(
                Errcode.UNKNOWN, f"The invited user's server failed: {exc}", status=502
            ) from exc
        except Exception as exc:
            raise MatrixError(
                Errcode.UNKNOWN, f"The invited user's server refused or failed: {exc}", status=502
            ) from exc
        signed = response.get("event") if isinstance(response, dict) else None
        try:
            countersigned = parse_pdu(signed, snapshot.room_version, room_id=snapshot.room_id)
        except InvalidPdu as exc:
            raise MatrixError(Errcode.UNKNOWN, f"Bad invite answer: {exc}", status=502) from exc
        if countersigned.event_id != pdu.event_id:
            raise MatrixError(Errcode.UNKNOWN, "The invite came back changed", status=502)
        # Keep our own copy of the event, with the invited server's signature added: only
        # that signature is taken from the answer (which could differ in unhashed parts).
        theirs = countersigned.data.get("signatures", {}).get(destination)
        if not isinstance(theirs, dict):
            raise MatrixError(Errcode.UNKNOWN, "The invite was not signed back", status=502)
        data = dict(pdu.data)
        data["signatures"] = {**dict(pdu.data.get("signatures", {})), destination: theirs}
        merged = Pdu(data, pdu.event_id, pdu.room_version)
        (valid,) = await self._keyring.verify_event_signatures(
            [(destination, redact(merged.data, snapshot.room_version), merged.origin_server_ts)]
        )
        if not valid:
            raise MatrixError(Errcode.UNKNOWN, "The invite was not signed back", status=502)
        return merged

    async def remote_invite(self, room_id: RoomID, user_id: UserID) -> RemoteInvite | None:
        invite = await self._invites.get(room_id, user_id)
        return invite if invite is not None and invite.membership == "invite" else None

    async def reject_invite(
        self, room_id: RoomID, user_id: UserID, reason: str | None, *, forwarded: bool = False
    ) -> None:
        """Leave a room this server is not in (reject an invite): make_leave/send_leave
        through the inviting server."""
        if await self._done_elsewhere("reject", room_id, user_id, forwarded, reason=reason):
            return
        invite = await self.remote_invite(room_id, user_id)
        if invite is None:
            raise MatrixError(Errcode.FORBIDDEN, "You are not invited to this room")
        server = server_name_of(invite.sender)
        try:
            template = await self._transport.make_leave(server, room_id, user_id)
            version = KNOWN_ROOM_VERSIONS[invite.room_version]
            event = dict(template["event"])
            content: JsonDict = {"membership": "leave"}
            if reason is not None:
                content["reason"] = reason
            event["content"] = content
            event["origin_server_ts"] = int(self._clock() * 1000)
            leave = finalize_pdu(
                event, version, origin_server_name=self._server_name, signing_key=self._signing_key
            )
            await self._transport.send_leave(server, room_id, leave.event_id, dict(leave.data))
        except (FederationError, KeyError, TypeError, ValueError) as exc:
            # The inviting server is gone or refuses: the invite is dropped here anyway.
            logger.info("rejecting the invite to %s through %s failed: %s", room_id, server, exc)
        await self._store_membership(
            user_id,
            room_id,
            "leave",
            lambda stream: self._invites.set_membership(room_id, user_id, "leave", stream),
        )

    async def _store_membership(
        self,
        user_id: UserID,
        room_id: RoomID,
        membership: str,
        store: Callable[[int], Awaitable[None]],
    ) -> None:
        """Store the user's new ``membership`` of a room this server is not in with
        ``store`` at a new events position, then tell /sync; a position whose write
        fails is abandoned, so the stream does not stall behind it."""
        stream = self._allocate_stream()
        try:
            await store(stream)
        except BaseException:
            self._abandon_stream(stream)
            raise
        self._on_remote_membership(user_id, room_id, membership, stream)

    async def knock_remote(
        self,
        room_id: RoomID,
        user_id: UserID,
        servers: Sequence[ServerName],
        reason: str | None,
        *,
        forwarded: bool = False,
    ) -> None:
        """Knock on a room this server is not in (make_knock/send_knock through the first
        of ``servers`` that answers); the room's stripped state is kept like an invite's."""
        if await self._done_elsewhere(
            "knock", room_id, user_id, forwarded, servers=list(servers), reason=reason
        ):
            return
        errors = []
        for server in [s for s in dict.fromkeys(servers) if self._allows(s)]:
            try:
                template = await self._transport.make_knock(
                    server, room_id, user_id, KNOWN_ROOM_VERSIONS
                )
                version = KNOWN_ROOM_VERSIONS[template["room_version"]]
                event = dict(template["event"])
                content: JsonDict = {"membership": "knock"}
                if reason is not None:
                    content["reason"] = reason
                event["content"] = content
                event["origin_server_ts"] = int(self._clock() * 1000)
                knock = finalize_pdu(
                    event,
                    version,
                    origin_server_name=self._server_name,
                    signing_key=self._signing_key,
                )
                answer = await self._transport.send_knock(
                    server, room_id, knock.event_id, dict(knock.data)
                )
            except FederationHttpError as exc:
                refused = join_refusal(exc)
                if refused is not None:  # e.g. 403 M_FORBIDDEN for a banned user
                    raise refused from exc
                errors.append(f"{server}: {exc}")
                continue
            except (FederationError, KeyError, TypeError, ValueError) as exc:
                errors.append(f"{server}: {exc}")
                continue
            break
        else:
            raise MatrixError(
                Errcode.UNKNOWN,
                "Failed to knock through " + "; ".join(errors or ["no server"]),
                status=502,
            )
        stripped = answer.get("knock_room_state", []) if isinstance(answer, dict) else []
        kept = (
            well_formed_stripped_state(stripped[:MAX_INVITE_STATE])
            if isinstance(stripped, list)
            else []
        )
        await self._store_membership(
            user_id,
            room_id,
            "knock",
            lambda stream: self._invites.put(
                RemoteInvite(
                    room_id,
                    user_id,
                    knock.event_id,
                    version.identifier,
                    user_id,
                    "knock",
                    stream,
                    dict(knock.data),
                    kept,
                )
            ),
        )

    async def forget_invite(self, room_id: RoomID, user_id: UserID) -> None:
        """The user joined the room: the room's own state holds their membership now."""
        await self._invites.delete(room_id, user_id)
