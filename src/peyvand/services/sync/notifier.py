"""Wakes long-polling /sync requests (DESIGN.md, "Sync").

Every stream reports its new position here together with exactly the local users who can
see the change; only their waiters wake. An idle incremental sync therefore costs no
database query: it just waits on a future.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

from peyvand.errors import Errcode, MatrixError
from peyvand.services.sync.streams import Stream, StreamToken


class ClientConnection(Protocol):
    """The connection a request came on, as its long-polls see it: it ends them the
    moment it is lost (the HTTP layer's connection, ``peyvand.api.connections``)."""

    def watch(self, future: asyncio.Future[bool]) -> bool:
        """Have ``future`` resolved with True (its client went away) when the
        connection is lost; False, holding nothing, when it is already closed."""

    def unwatch(self, future: asyncio.Future[bool]) -> None:
        """Forget ``future`` (it is over), if still held."""


# The connection the requests served in this context came on (set by the HTTP layer with
# ``serve_on``); None outside one.
_connection: ContextVar[ClientConnection | None] = ContextVar("connection", default=None)

# Whether the client of the long-poll running in this context has gone (set by the API
# handler with ``abandoned_when``); None outside a request.
_client_gone: ContextVar[Callable[[], bool] | None] = ContextVar("client_gone", default=None)


class ClientGone(Exception):
    """The long-poll's client disconnected while it waited: nobody will read an answer."""


def serve_on(connection: ClientConnection) -> None:
    """Record, for the rest of the calling task and the tasks it starts, that the
    requests it serves came on ``connection``: called once by the task serving a
    connection, before it handles any request."""
    _connection.set(connection)


@contextmanager
def abandoned_when(gone: Callable[[], bool]) -> Iterator[None]:
    """Within this block, ``Notifier.wait_for_user`` raises ``ClientGone`` at once if
    ``gone()`` is true, and as soon as the request's connection (``serve_on``) is lost
    while it waits, so a long-poll whose client disconnected stops waiting and computes
    nothing (issue 15). Nothing is checked periodically (issue 18: idle CPU)."""
    reset = _client_gone.set(gone)
    try:
        yield
    finally:
        _client_gone.reset(reset)


class Notifier:
    def __init__(self, initial: StreamToken) -> None:
        self._current = initial
        # user_id -> the futures of the long-polls currently waiting for that user.
        self._waiters: dict[str, list[asyncio.Future[bool]]] = {}
        # Set when the process stops: no long-poll waits any longer (``stop``).
        self._stopping = False
        # Told of every stream but the events' advancing, with the users to wake and the
        # audiences (in a deployment: published to the other processes; issue 21). The
        # events stream is followed from the database instead
        # (``services.timeline.event_follower``).
        self.observers: list[
            Callable[[Stream, int, Collection[str], Sequence[AbstractSet[str]]], None]
        ] = []

    @property
    def current_token(self) -> StreamToken:
        return self._current

    def advance(
        self,
        stream: Stream,
        position: int,
        user_ids: Iterable[str],
        audiences: Sequence[AbstractSet[str]] = (),
    ) -> None:
        """Record ``stream`` at ``position`` and wake the waiting syncs of ``user_ids``
        and of every user in ``audiences``.

        ``audiences`` are sets kept elsewhere and read in place, never copied (a room's
        joined local members as its snapshot keeps them): the caller builds nothing per
        member. Walks whichever is smaller, the users or those waiting: a message to a big
        room few of whose members are syncing costs O(waiters), not O(members)."""
        if position > self._current.get(stream):
            self._current = self._current.advanced(stream, position)
        if self.observers and stream is not Stream.EVENTS:
            if not isinstance(user_ids, Collection):
                user_ids = list(user_ids)
            for observer in self.observers:
                observer(stream, position, user_ids, audiences)
        waiters = self._waiters
        sets = list(audiences)
        if isinstance(user_ids, AbstractSet):
            sets.append(user_ids)
            woken: list[list[asyncio.Future[bool]]] = []
        else:
            woken = [futures for user_id in user_ids if (futures := waiters.get(user_id))]
        if len(waiters) < sum(len(users) for users in sets):
            woken += [
                futures
                for user_id, futures in waiters.items()
                if any(user_id in users for users in sets)
            ]
        else:
            for users in sets:
                woken += [futures for user_id in users if (futures := waiters.get(user_id))]
        for futures in woken:
            for future in futures:
                _wake(future)

    def advance_all(self, stream: Stream, position: int) -> None:
        """Record ``stream`` at ``position`` and wake every waiting sync (another process
        moved the stream without naming the users: too many to name)."""
        self.advance(stream, position, set(self._waiters))

    def stop(self) -> None:
        """The process is stopping: every waiting long-poll, and any that would start
        waiting, is answered 503 now rather than held until its timeout (the HTTP server
        waits for the requests in flight before it lets the process stop)."""
        self._stopping = True
        for futures in list(self._waiters.values()):
            for future in futures:
                _wake(future)

    async def wait_for_user(self, user_id: str, timeout_s: float) -> None:
        """Return when a stream advances for ``user_id``, or on timeout.

        Callers compare ``current_token`` with what they have already seen right before
        calling (no await in between), so no wake-up can be missed. A waiting poll holds
        one future and its deadline's timer handle, nothing more (issue 15: memory per
        idle long-poll; issue 18: no timer, nor sweep, per poll). Raises ``ClientGone``
        when the request's client disconnects (see ``abandoned_when``): its connection
        resolves the future when lost, whose result tells, so no exception refers to the
        waiting frames. Raises a 503 ``MatrixError`` once the process stops (``stop``)."""
        if self._stopping:
            raise _stopping()
        gone = _client_gone.get()
        connection = None
        if gone is not None:
            if gone():
                raise ClientGone
            connection = _connection.get()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        if connection is not None and not connection.watch(future):
            raise ClientGone
        futures = self._waiters.setdefault(user_id, [])
        futures.append(future)
        deadline = loop.call_later(timeout_s, _wake, future)
        try:
            client_gone = await future
        finally:
            deadline.cancel()
            if connection is not None:
                connection.unwatch(future)
            futures.remove(future)
            if not futures:
                self._waiters.pop(user_id, None)
        if client_gone:
            raise ClientGone
        if self._stopping:
            raise _stopping()


def _stopping() -> MatrixError:
    return MatrixError(Errcode.UNKNOWN, "The server is stopping", status=503)


def _wake(future: asyncio.Future[bool]) -> None:
    """A stream moved for the poll's user, or its deadline passed: not gone."""
    if not future.done():
        future.set_result(False)
