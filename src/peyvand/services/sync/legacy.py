"""The deprecated reads that came before /sync (Client-Server API, "Legacy" sections of
old_sync.yaml, room_initial_sync.yaml and peeking_events.yaml):

- ``GET /initialSync``: every room of the user with its current state and latest events;
- ``GET /rooms/{roomId}/initialSync``: one room, also for anyone when it is world-readable;
- ``GET /events``: a stream of the user's room events and account data after a token,
  long-polled; with ``room_id`` one room only, which peeks into a world-readable room the
  user has not joined ("Room Previews").

Tokens are /sync stream tokens, so ``end`` of an initial sync continues with ``/events``.
Events pass the same history visibility (and ignored users) as /sync and /messages.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from peyvand.errors import Errcode, MatrixError
from peyvand.services.accounts.requester import Requester
from peyvand.services.rooms.reads import RoomEventsService, position_token
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.presence import PresenceService
from peyvand.services.sync.streams import StreamToken
from peyvand.services.sync.sync import AccountDataSource
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.events import EventStore
from peyvand.storage.models import StoredEvent
from peyvand.types import JsonDict, RoomID, UserID

DEFAULT_LIMIT = 10
MAX_LIMIT = 1000
# A peek is not woken by the room's events (only members are): it looks again this often.
_PEEK_POLL_SECONDS = 0.5


class ReceiptReads(Protocol):
    async def receipts_for_rooms(
        self, user_id: UserID, room_ids: Sequence[RoomID], since: int, until: int
    ) -> dict[RoomID, JsonDict]: ...


class LegacySyncService:
    def __init__(
        self,
        store: EventStore,
        index: RoomIndex,
        state: StateService,
        room_events: RoomEventsService,
        notifier: Notifier,
        account_data: AccountDataSource,
        receipts: ReceiptReads,
        *,
        presence: PresenceService | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._presence = presence
        self._store = store
        self._index = index
        self._state = state
        self._room_events = room_events
        self._notifier = notifier
        self._account_data = account_data
        self._receipts = receipts
        self._clock = clock

    # -- GET /initialSync ----------------------------------------------------------------

    async def initial_sync(self, requester: Requester, *, limit: int, archived: bool) -> JsonDict:
        """GET /initialSync: rooms joined or invited to (and left, with ``archived``)."""
        user_id = requester.user_id
        now = self._notifier.current_token
        wanted = ("join", "invite", "leave", "ban") if archived else ("join", "invite")
        memberships = dict(await self._index.memberships(user_id))
        public = set(await self._store.get_public_room_ids())
        room_data = await self._account_data.room_account_data_since(
            user_id, None, now.account_data
        )
        joined = [r for r, (m, _) in memberships.items() if m == "join"]
        receipts = await self._receipts.receipts_for_rooms(user_id, joined, 0, now.receipts)
        rooms = []
        for room_id, (membership, position) in memberships.items():
            if membership not in wanted or position > now.events:
                continue
            snapshot = await self._state.get_room(room_id)
            if snapshot is None:
                continue  # an invite over federation: nothing here to show
            room: JsonDict = {
                "room_id": room_id,
                "membership": membership,
                "visibility": "public" if room_id in public else "private",
            }
            if membership == "invite":
                invite_id = snapshot.state.get(("m.room.member", user_id))
                invite = await self._state.get_event(invite_id) if invite_id else None
                if invite is not None:
                    room["inviter"] = invite.pdu.sender
                    room["invite"] = (await self._room_events.serialize([invite], requester))[0]
            else:
                until = now.events if membership == "join" else position
                room |= await self._room_snapshot(requester, room_id, until, now, limit)
                room["account_data"] = room_data.get(room_id, [])
            rooms.append(room)
        return {
            "end": now.serialize(),
            "rooms": rooms,
            "presence": (await self._presence.for_initial_sync(user_id) if self._presence else []),
            "account_data": await self._account_data.global_account_data_since(
                user_id, None, now.account_data
            ),
            "receipts": list(receipts.values()),
        }

    # -- GET /rooms/{roomId}/initialSync -------------------------------------------------

    async def room_initial_sync(
        self, requester: Requester, room_id: RoomID, *, limit: int
    ) -> JsonDict:
        """GET /rooms/{roomId}/initialSync: for members, those who left (up to their
        leave) and, in a world-readable room, anyone; 403 for others."""
        user_id = requester.user_id
        now = self._notifier.current_token
        snapshot = await self._state.get_room(room_id)
        membership = snapshot.memberships.get(user_id) if snapshot is not None else None
        world_readable = await self._room_events.world_readable(room_id)
        if snapshot is None or (membership not in ("join", "leave", "ban") and not world_readable):
            raise MatrixError(Errcode.FORBIDDEN, "You are not a member of this room")
        until = now.events
        if membership in ("leave", "ban") and not world_readable:
            member_id = snapshot.state.get(("m.room.member", user_id))
            member = await self._state.get_event(member_id) if member_id else None
            until = member.stream_ordering if member is not None else 0
        result: JsonDict = {"room_id": room_id}
        if membership is not None:
            result["membership"] = membership
        result |= await self._room_snapshot(requester, room_id, until, now, limit)
        room_data = await self._account_data.room_account_data_since(
            user_id, None, now.account_data
        )
        receipts = (
            await self._receipts.receipts_for_rooms(user_id, [room_id], 0, now.receipts)
            if membership == "join"
            else {}
        )
        result["account_data"] = room_data.get(room_id, []) if membership is not None else []
        result["receipts"] = list(receipts.values())
        result["presence"] = (
            self._presence.for_room_initial_sync(snapshot.joined_members())
            if self._presence is not None and membership == "join"
            else []
        )
        return result

    async def _room_snapshot(
        self, requester: Requester, room_id: RoomID, until: int, now: StreamToken, limit: int
    ) -> JsonDict:
        """``messages`` (the latest visible events up to ``until``) and ``state`` (the
        state at ``until``)."""
        found = await self._room_events.scan(
            requester.user_id,
            room_id,
            after=None,
            before=until,
            newest_first=True,
            limit=limit,
            event_filter=None,
        )
        events = list(reversed(found.events))
        # As ``GET /state``: the current state once what the room holds is committed.
        snapshot = await self._state.committed_room(room_id)
        assert snapshot is not None
        if until >= now.events:
            state_ids = dict(snapshot.state)
        else:
            last = await self._store.get_room_events(
                room_id, after=None, before=until, limit=1, newest_first=True
            )
            state_ids = await self._state.state_ids_at_group(last[0].state_group) if last else {}
        state = await self._state.get_state_events_by_id(state_ids.values())
        start = events[0].stream_ordering - 1 if events else until
        return {
            "messages": {
                "chunk": await self._room_events.serialize(events, requester),
                "start": position_token(start),
                "end": now.serialize(),
            },
            "state": await self._room_events.serialize(
                [state[i] for i in state_ids.values() if i in state], requester
            ),
        }

    # -- GET /events ---------------------------------------------------------------------

    async def events(
        self,
        requester: Requester,
        *,
        from_token: StreamToken | None,
        timeout_ms: int,
        limit: int,
        room_id: RoomID | None,
    ) -> JsonDict:
        """GET /events: what happened after ``from_token`` (now when absent), waiting up to
        ``timeout_ms`` for something. Guests must name a room (they only peek)."""
        user_id = requester.user_id
        if room_id is None and requester.is_guest:
            raise MatrixError(Errcode.GUEST_ACCESS_FORBIDDEN, "Guests must give a room_id")
        peeking = False
        if room_id is not None:
            snapshot = await self._state.get_room(room_id)
            joined = snapshot is not None and snapshot.memberships.get(user_id) == "join"
            if not joined and not await self._room_events.world_readable(room_id):
                raise MatrixError(Errcode.FORBIDDEN, "You are not a member of this room")
            peeking = not joined
        since = from_token if from_token is not None else self._notifier.current_token
        deadline = self._clock() + timeout_ms / 1000
        while True:
            now = self._notifier.current_token
            chunk, end = await self._events_between(requester, since, now, limit, room_id)
            remaining = deadline - self._clock()
            if chunk or remaining <= 0:
                return {"start": since.serialize(), "end": end.serialize(), "chunk": chunk}
            if peeking:
                await self._notifier.wait_for_user(user_id, min(remaining, _PEEK_POLL_SECONDS))
            elif self._notifier.current_token == now:
                await self._notifier.wait_for_user(user_id, remaining)

    async def _events_between(
        self,
        requester: Requester,
        since: StreamToken,
        now: StreamToken,
        limit: int,
        only_room: RoomID | None,
    ) -> tuple[list[JsonDict], StreamToken]:
        """Room events in ``(since, now]``, oldest first, at most ``limit`` of them, then
        account data when every event fitted; the token to continue from."""
        user_id = requester.user_id
        if only_room is not None:
            rooms = [only_room]
        else:
            memberships = await self._index.memberships(user_id)
            rooms = [r for r, (m, _) in memberships.items() if m in ("join", "invite")]
        end = now
        chunk: list[JsonDict] = []
        if now.events > since.events:
            changed = await self._index.rooms_changed_since(rooms, since.events)
            per_room: list[list[StoredEvent]] = []
            for room_id in changed:
                found = await self._room_events.scan(
                    user_id,
                    room_id,
                    after=since.events,
                    before=now.events,
                    newest_first=False,
                    limit=limit + 1,
                    event_filter=None,
                )
                per_room.append(found.events)
            merged = list(heapq.merge(*per_room, key=lambda e: e.stream_ordering))
            if len(merged) > limit:
                merged = merged[:limit]
                # Stop after the last event delivered; the rest comes next time.
                end = StreamToken(
                    merged[-1].stream_ordering if merged else since.events,
                    since.typing,
                    since.receipts,
                    since.account_data,
                    since.to_device,
                    since.device_lists,
                    since.presence,
                    since.partial_state,
                )
            chunk = await self._room_events.serialize(merged, requester)
        if only_room is None and end is now and now.account_data > since.account_data:
            chunk += await self._account_data.global_account_data_since(
                user_id, since.account_data, now.account_data
            )
            by_room = await self._account_data.room_account_data_since(
                user_id, since.account_data, now.account_data
            )
            chunk += [{**e, "room_id": r} for r, events in by_room.items() for e in events]
        return chunk, end
