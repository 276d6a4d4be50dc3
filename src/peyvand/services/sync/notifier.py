"""Wakes long-polling /sync requests (DESIGN.md, "Sync").

Every stream reports its new position here together with exactly the local users who can
see the change; only their waiters wake. An idle incremental sync therefore costs no
database query: it just waits on a future.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from contextvars import ContextVar

from peyvand.services.sync.streams import Stream, StreamToken

# How often a waiting long-poll checks whether its client is still connected: aiohttp
# signals nothing to a handler when a bodiless request's connection closes.
GONE_CHECK_SECONDS = 1.0

# Whether the client of the long-poll running in this context has gone (set by the API
# handler with ``abandoned_when``); None outside a request.
_client_gone: ContextVar[Callable[[], bool] | None] = ContextVar("client_gone", default=None)


class ClientGone(Exception):
    """The long-poll's client disconnected while it waited: nobody will read an answer."""


@contextmanager
def abandoned_when(gone: Callable[[], bool]) -> Iterator[None]:
    """Within this block, ``Notifier.wait_for_user`` raises ``ClientGone`` as soon as
    ``gone()`` is true (checked every ``GONE_CHECK_SECONDS``), so a long-poll whose client
    disconnected stops waiting and computes nothing (issue 15)."""
    reset = _client_gone.set(gone)
    try:
        yield
    finally:
        _client_gone.reset(reset)


class Notifier:
    def __init__(self, initial: StreamToken) -> None:
        self._current = initial
        # user_id -> the futures of the long-polls currently waiting for that user.
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

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
        waiters = self._waiters
        sets = list(audiences)
        if isinstance(user_ids, AbstractSet):
            sets.append(user_ids)
            woken: list[list[asyncio.Future[None]]] = []
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

    async def wait_for_user(self, user_id: str, timeout_s: float) -> None:
        """Return when a stream advances for ``user_id``, or on timeout.

        Callers compare ``current_token`` with what they have already seen right before
        calling (no await in between), so no wake-up can be missed. A waiting poll holds
        one future, one timer handle and its ``_Timer``, nothing more (issue 15: memory per idle
        long-poll). Raises ``ClientGone`` when the request's client disconnects (see
        ``abandoned_when``)."""
        gone = _client_gone.get()
        if gone is not None and gone():
            raise ClientGone
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        futures = self._waiters.setdefault(user_id, [])
        futures.append(future)
        timer = _Timer(loop, future, gone, timeout_s)
        try:
            await future
        finally:
            timer.cancel()
            futures.remove(future)
            if not futures:
                self._waiters.pop(user_id, None)
        if timer.client_gone:
            raise ClientGone


class _Timer:
    """Wakes a long-poll's ``future`` at its deadline; with ``gone``, checks every
    ``GONE_CHECK_SECONDS`` before that whether the client went away (then wakes it with
    ``client_gone`` set).

    An object rather than a closure that re-arms itself: such a closure refers to itself,
    so every long-poll left a reference cycle holding its whole request (and, when its
    client had gone, the ``ClientGone`` it was woken with, whose traceback held the
    waiting frames) for the cycle collector, which long-polls, living long enough to reach
    its oldest generation, wait for long (issue 15: peak memory). A cancelled handle drops
    its callback, so once the poll is over nothing refers back to this."""

    __slots__ = ("_deadline", "_future", "_gone", "_handle", "_loop", "client_gone")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[None],
        gone: Callable[[], bool] | None,
        timeout_s: float,
    ) -> None:
        self._loop = loop
        self._future = future
        self._gone = gone
        self._deadline = loop.time() + timeout_s
        self.client_gone = False
        delay = timeout_s if gone is None else min(timeout_s, GONE_CHECK_SECONDS)
        self._handle = loop.call_later(delay, self._check)

    def cancel(self) -> None:
        self._handle.cancel()

    def _check(self) -> None:
        if self._gone is not None and self._gone():
            self.client_gone = True
            _wake(self._future)
        elif (remaining := self._deadline - self._loop.time()) <= 0:
            _wake(self._future)
        else:
            self._handle = self._loop.call_later(min(remaining, GONE_CHECK_SECONDS), self._check)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
