"""Simplified sliding sync (MSC4186; Synapse 1.163's ``SlidingSyncHandler``):
``POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync``.

A request names lists (windows over the user's rooms, filtered and sorted by
``bump_stamp``) and room subscriptions; the response carries each list's ``count`` and
``SYNC`` op per range, the rooms in view with what is new to the connection
(``rooms.py``), and the extensions (``extensions.py``). The connection's ``pos``
(``connections.py``) names what it was sent. An incremental request with nothing new
waits on the notifier, as /sync does, without touching the database (but once per user
and set of joined rooms, before the first wait, to have their unread counts kept: a room
coming into view is then answered from memory): it is woken by any stream of the user's
(not by events elsewhere on the server, even those landing while it computes), and
answers only when its lists, rooms or extensions changed. While it waits it
holds what it continues from (``_Poll``: the request's extensions parsed once), none of
its last computation.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson

from peyvand.lru import LRU
from peyvand.services.accounts.requester import Requester
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.sliding.account_view import AccountView
from peyvand.services.sync.sliding.connections import (
    NOTHING_HELD,
    ConnectionKey,
    ConnectionPosition,
    ConnectionStore,
    Pos,
)
from peyvand.services.sync.sliding.ext_request import ExtensionsRequest
from peyvand.services.sync.sliding.extensions import carries_news
from peyvand.services.sync.sliding.request import (
    ListFilters,
    RoomParams,
    SharedRequiredStates,
    SlidingSyncRequest,
)
from peyvand.services.sync.sliding.room_lists import (
    ListFiltering,
    ListResult,
    SpaceChildren,
    UserRoom,
    combined_params,
    list_json,
    windows,
)
from peyvand.services.sync.sliding.rooms import RoomRequest, RoomResponses
from peyvand.services.sync.sliding.sent_rooms import RoomStatuses
from peyvand.services.sync.sliding.user_rooms import UserRooms
from peyvand.services.sync.streams import StreamToken
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.types import DeviceID, JsonDict, RoomID, UserID

# A list without filters: all the user's listed rooms.
_NO_FILTERS = ListFilters()
# Users whose joined rooms' unread counts a long-poll had kept before waiting (``_warm``).
_WARMED_USERS = 10_000
# Joined rooms past which a user's counts are not had kept (a fifth of what the counts
# cache holds: one user must not push every other's out).
_WARM_ROOMS = 2_000


class Extensions(Protocol):
    """The response's ``extensions`` (``extensions.SlidingExtensions``)."""

    async def respond(
        self,
        user_id: UserID,
        device_id: DeviceID,
        request: ExtensionsRequest,
        since: StreamToken | None,
        upto: StreamToken,
        lists: Mapping[str, Sequence[RoomID]],
        subscriptions: Sequence[RoomID],
        *,
        initial_rooms: frozenset[RoomID] = frozenset(),
        sent: Mapping[str, RoomStatuses] | None = None,
        joined: frozenset[RoomID] = frozenset(),
        timelines: Mapping[RoomID, Sequence[str]] | None = None,
        expanded: frozenset[RoomID] = frozenset(),
    ) -> tuple[JsonDict, dict[str, RoomStatuses]]: ...

    def has_news(
        self, request: ExtensionsRequest, since: StreamToken | None, upto: StreamToken
    ) -> bool: ...


@dataclass(frozen=True, slots=True)
class _Poll:
    """What a request holds across its passes (and while it waits): the connection it
    continues and how long it may wait, never a pass's computation."""

    key: ConnectionKey
    # The connection position it continues (None: a new connection).
    base: int | None
    since: StreamToken | None
    previous: ConnectionPosition
    # The request's ``extensions``, parsed once for all passes.
    extensions: ExtensionsRequest
    deadline: float


@dataclass(frozen=True, slots=True)
class _Pass:
    """One computation of the response at a token, before its extensions."""

    lists: dict[str, JsonDict]
    list_rooms: dict[str, list[RoomID]]
    subscriptions: list[RoomID]
    rooms: dict[RoomID, JsonDict]
    # The rooms the user is joined to (the only ones receipts and typing cover).
    joined: frozenset[RoomID]
    position: ConnectionPosition
    # The rooms of ``position`` answered by this pass (the others are the previous
    # position's own objects).
    answered: frozenset[RoomID]
    # Whether rooms or lists changed for the connection.
    news: bool


class SlidingSyncService:
    def __init__(
        self,
        index: RoomIndex,
        user_rooms: UserRooms,
        notifier: Notifier,
        account_view: AccountView,
        filtering: ListFiltering,
        responses: RoomResponses,
        extensions: Extensions,
        *,
        is_mine: Callable[[str], bool],
        is_partial: Callable[[RoomID], bool],
        connections: ConnectionStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``user_rooms``: the rooms each user's lists hold, in list order."""
        self._index = index
        self._user_rooms = user_rooms
        self._notifier = notifier
        self._account_view = account_view
        self._responses = responses
        self._extensions = extensions
        # Not ``or``: an empty store is falsy (``len``).
        self._connections = connections if connections is not None else ConnectionStore()
        self._filtering = filtering
        self._is_mine = is_mine
        self._is_partial = is_partial
        self._clock = clock
        # user -> the joined rooms whose unread counts a long-poll of theirs had kept.
        self._warmed: LRU[UserID, frozenset[RoomID]] = LRU(_WARMED_USERS)
        self._required_states = SharedRequiredStates()

    async def sync(
        self,
        requester: Requester,
        request: SlidingSyncRequest,
        pos: str | None,
        timeout_ms: int,
    ) -> JsonDict:
        """The response to ``request`` from ``pos`` (None: a new connection), waiting up
        to ``timeout_ms`` for news when there is none. 400 ``M_UNKNOWN_POS`` for a
        ``pos`` this server does not hold."""
        key: ConnectionKey = (requester.user_id, requester.device_id, request.conn_id or "")
        request = self._required_states.request(request)
        wanted = request.extensions
        if pos is None:
            base, since, previous = None, None, self._connections.start(key)
        else:
            parsed = Pos.parse(pos)
            base, since = parsed.connection, parsed.token
            previous = self._connections.resume(key, parsed.connection)
        poll = _Poll(key, base, since, previous, wanted, self._clock() + timeout_ms / 1000)
        # A long-poll waits for a stream to move for this user (the notifier wakes a
        # user for their rooms' events and their own streams), never for the server's
        # token: on a busy server that moves during every computation. The waiter is
        # registered before the token is read, so no change after it is missed; but a
        # pass just woken, which mostly has news, computes first and registers only if
        # it has none (a task and its two steps saved per wake), then computes once
        # more if the server's token moved meanwhile.
        waiter: asyncio.Task[None] | None = None
        woken = False
        try:
            while True:
                if (
                    since is not None
                    and waiter is None
                    and not woken
                    and self._clock() < poll.deadline
                ):
                    waiter = self._wait(requester.user_id, poll)
                    await asyncio.sleep(0)  # the waiter's first step: it is registered
                elif woken:
                    # The turn of the event loop the waiter's registration gave: the
                    # step that woke it (a sender's request) ends, its answer written,
                    # before this computes (measured: every time, as before).
                    await asyncio.sleep(0)
                now = self._notifier.current_token
                answer = await self._answer(requester, request, poll, now)
                if answer is not None:
                    return answer
                if woken:
                    woken = False
                    if self._clock() < poll.deadline:
                        waiter = self._wait(requester.user_id, poll)
                        await asyncio.sleep(0)
                        if self._notifier.current_token != now:
                            continue
                if waiter is None:  # the deadline passed while computing
                    continue
                await waiter  # a stream moved for the user, or the deadline
                waiter = None
                woken = True
        finally:
            if waiter is not None:
                _end(waiter)

    def _wait(self, user_id: UserID, poll: _Poll) -> asyncio.Task[None]:
        """A waiter for a stream to move for ``user_id`` until the poll's deadline (it is
        registered at its first step)."""
        return asyncio.ensure_future(
            self._notifier.wait_for_user(user_id, poll.deadline - self._clock())
        )

    async def _answer(
        self, requester: Requester, request: SlidingSyncRequest, poll: _Poll, now: StreamToken
    ) -> JsonDict | None:
        """One pass at the token ``now``: the response, or None to wait for news (what
        it computed is then dropped: a waiting long-poll holds none of it)."""
        since, previous = poll.since, poll.previous
        computed = await self._compute(requester, request, previous, since, now)
        ext_news = self._extensions.has_news(poll.extensions, since, now)
        if not (since is None or computed.news or ext_news or self._clock() >= poll.deadline):
            await self._warm(requester.user_id, computed.joined)
            return None
        extensions, sent = await self._respond_extensions(
            requester, poll.extensions, computed, previous, since, now
        )
        timed_out = self._clock() >= poll.deadline
        # A room extension's statuses change also when a room out of view missed changes
        # (``sent_rooms``): that alone does not end the wait, but the answer at its end
        # must record it for the next request.
        if (
            since is None
            or computed.news
            or carries_news(extensions)
            or (timed_out and sent != previous.extensions)
        ):
            position = ConnectionPosition(computed.position.rooms, computed.position.lists, sent)
            number = (
                NOTHING_HELD
                if position.holds_nothing()
                else self._connections.record(
                    poll.key, poll.base, position, changed=computed.answered
                )
            )
            return _response(Pos(number, now), computed, extensions)
        if timed_out:
            assert poll.base is not None
            return _response(Pos(poll.base, now), computed, extensions)
        await self._warm(requester.user_id, computed.joined)
        return None

    async def _warm(self, user_id: UserID, joined: frozenset[RoomID]) -> None:
        """Before a long-poll first waits for the user's rooms as they are: have the
        unread counts of all their joined rooms kept (one read of those not kept), so
        that a room coming into view when an event wakes the poll is answered without
        reading them (issue 18: the incremental wake). Once per user and set of rooms, for
        users in at most ``_WARM_ROOMS`` rooms."""
        if not joined or len(joined) > _WARM_ROOMS or self._warmed.get(user_id) is joined:
            return
        await self._responses.keep_counts(user_id, joined)
        self._warmed.put(user_id, joined)

    async def _respond_extensions(
        self,
        requester: Requester,
        wanted: ExtensionsRequest,
        computed: _Pass,
        previous: ConnectionPosition,
        since: StreamToken | None,
        now: StreamToken,
    ) -> tuple[JsonDict, dict[str, RoomStatuses]]:
        initial = frozenset(r for r, body in computed.rooms.items() if body.get("initial"))
        expanded = frozenset(
            r for r, body in computed.rooms.items() if body.get("unstable_expanded_timeline")
        )
        timelines = {
            r: [e["event_id"] for e in body.get("timeline", ()) if "event_id" in e]
            for r, body in computed.rooms.items()
        }
        return await self._extensions.respond(
            requester.user_id,
            requester.device_id,
            wanted,
            since,
            now,
            computed.list_rooms,
            computed.subscriptions,
            initial_rooms=initial,
            sent=previous.extensions,
            joined=computed.joined,
            timelines=timelines,
            expanded=expanded,
        )

    async def _compute(
        self,
        requester: Requester,
        request: SlidingSyncRequest,
        previous: ConnectionPosition,
        since: StreamToken | None,
        now: StreamToken,
    ) -> _Pass:
        user_id = requester.user_id
        listed = await self._user_rooms.listed(
            user_id, since.events if since is not None else None, now.events
        )
        rooms = listed.rooms
        results: dict[str, ListResult] = {}
        spaces: SpaceChildren = {}
        for name, config in request.lists.items():
            order = listed.order
            if config.filters != _NO_FILTERS:
                kept = {
                    r.room_id
                    for r in await self._filtering.apply(user_id, rooms, config.filters, spaces)
                }
                order = [r for r in listed.order if r in kept]
            if config.params.must_await_full_state(self._is_mine):
                order = [r for r in order if not self._is_partial(r)]
            results[name] = windows(order, config)
        # A subscription shows a room the user is in, invited to, knocking on, banned
        # or kicked from, or left and did not forget (up to the leave), as Synapse;
        # nothing of others, nor of a room with partial state that needs the full
        # state, until it has it.
        subscriptions = {
            r: p
            for r, p in request.room_subscriptions.items()
            if (r in rooms or r in listed.left)
            and not (p.must_await_full_state(self._is_mine) and self._is_partial(r))
        }
        left = {
            r: UserRoom(r, "leave", listed.left[r], listed.left[r])
            for r in subscriptions
            if r not in rooms
        }
        if left:
            rooms = {**rooms, **left}
        wanted = combined_params(request.lists, results, subscriptions)
        to_answer = await self._rooms_to_answer(rooms, wanted, previous)
        direct = await self._account_view.direct_rooms(user_id) if to_answer else frozenset()
        bodies, sent = await self._responses.build(
            requester,
            to_answer,
            since=since.events if since is not None else None,
            until=now.events,
            direct=direct,
        )
        lists = {name: list_json(result, request.lists[name]) for name, result in results.items()}
        digests = {name: _digest(value) for name, value in lists.items()}
        position = ConnectionPosition({**previous.rooms, **sent}, digests, previous.extensions)
        return _Pass(
            lists=lists,
            list_rooms={
                name: [r for window in result.windows for r in window]
                for name, result in results.items()
            },
            subscriptions=list(subscriptions),
            rooms=bodies,
            joined=listed.joined,
            position=position,
            answered=frozenset(sent),
            news=bool(bodies) or digests != previous.lists,
        )

    async def _rooms_to_answer(
        self,
        rooms: Mapping[RoomID, UserRoom],
        wanted: Mapping[RoomID, RoomParams],
        previous: ConnectionPosition,
    ) -> list[RoomRequest]:
        """The rooms in view that may have news for the connection: new to it, with a
        membership or ``required_state`` changed since it was sent, or with events after
        what it was sent (the room index tells, in memory), or asked for a longer
        timeline than it was sent."""
        answer: list[RoomRequest] = []
        # Sent at or after ``exact_from``, a room has news when its newest event is
        # after what was sent; before it (a connection older than this process's view),
        # the index asks the database, grouped by sent position.
        newest, exact_from = self._index.newest_positions, self._index.exact_from
        by_position: dict[int, list[RoomID]] = {}
        sent_rooms = previous.rooms
        for room_id, params in wanted.items():
            room = rooms[room_id]
            sent = sent_rooms.get(room_id)
            if (
                sent is None
                or sent.membership != room.membership
                or room.membership_position > sent.position
                # Shared objects (``SharedRequiredStates``): mostly the same one.
                or (
                    sent.required_state is not params.required_state
                    and sent.required_state != params.required_state
                )
                or params.timeline_limit > sent.timeline_limit
            ):
                answer.append(RoomRequest(room, params, sent))
            elif room.membership == "join":
                if sent.position < exact_from:
                    by_position.setdefault(sent.position, []).append(room_id)
                elif newest.get(room_id, -1) > sent.position:
                    answer.append(RoomRequest(room, params, sent))
        for position, room_ids in by_position.items():
            for room_id in await self._index.rooms_changed_since(room_ids, position):
                answer.append(RoomRequest(rooms[room_id], wanted[room_id], sent_rooms[room_id]))
        return answer


def _end(waiter: asyncio.Task[None]) -> None:
    """A waiter no longer awaited: cancelled, or its outcome (``ClientGone``) read."""
    if not waiter.done():
        waiter.cancel()
    elif not waiter.cancelled():
        waiter.exception()


def _digest(value: JsonDict) -> bytes:
    """What a connection keeps of a list it was sent, to tell whether it changed: 16
    bytes, not the list (up to 100 lists per connection, held for every connection).
    Compared only with digests of this function (connections are held in memory)."""
    return hashlib.blake2b(orjson.dumps(value), digest_size=16).digest()


def _response(pos: Pos, computed: _Pass, extensions: JsonDict) -> JsonDict:
    """The response body; ``lists`` only when the request had any, as Synapse."""
    body: JsonDict = {"pos": pos.serialize()}
    if computed.lists:
        body["lists"] = computed.lists
    body["rooms"] = computed.rooms
    body["extensions"] = extensions
    return body
