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

# How often the waiting long-polls are checked for a client that is no longer connected:
# aiohttp signals nothing to a handler when a bodiless request's connection closes.
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
        self._waiters: dict[str, list[asyncio.Future[bool]]] = {}
        # The waiting long-polls whose client may go away, and how to tell (``gone``):
        # one sweep every ``GONE_CHECK_SECONDS`` checks them all, armed only while any
        # waits, so idle long-polls cost no timer of their own but their deadline.
        self._watched: dict[asyncio.Future[bool], Callable[[], bool]] = {}
        self._sweep: asyncio.TimerHandle | None = None

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

    async def wait_for_user(self, user_id: str, timeout_s: float) -> None:
        """Return when a stream advances for ``user_id``, or on timeout.

        Callers compare ``current_token`` with what they have already seen right before
        calling (no await in between), so no wake-up can be missed. A waiting poll holds
        one future and its deadline's timer handle, nothing more (issue 15: memory per
        idle long-poll; issue 18: no timer re-armed every second per poll). Raises
        ``ClientGone`` when the request's client disconnects (see ``abandoned_when``);
        the future's result tells, so no exception refers to the waiting frames."""
        gone = _client_gone.get()
        if gone is not None and gone():
            raise ClientGone
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        futures = self._waiters.setdefault(user_id, [])
        futures.append(future)
        deadline = loop.call_later(timeout_s, _wake, future)
        if gone is not None:
            self._watched[future] = gone
            if self._sweep is None:
                self._sweep = loop.call_later(GONE_CHECK_SECONDS, self._check_gone)
        try:
            client_gone = await future
        finally:
            deadline.cancel()
            if self._watched.pop(future, None) is not None and not self._watched:
                self._stop_sweep()
            futures.remove(future)
            if not futures:
                self._waiters.pop(user_id, None)
        if client_gone:
            raise ClientGone

    def _check_gone(self) -> None:
        """Wake, as gone, each waiting long-poll whose client went away; again in
        ``GONE_CHECK_SECONDS`` while any is watched.

        A bound method held by one handle, not a closure per poll: nothing refers back
        to a poll once it is over (issue 15: a poll's reference cycle held its request
        until the cycle collector reached it)."""
        self._sweep = None
        for future in [f for f, gone in self._watched.items() if gone()]:
            del self._watched[future]
            if not future.done():
                future.set_result(True)
        if self._watched:
            loop = asyncio.get_running_loop()
            self._sweep = loop.call_later(GONE_CHECK_SECONDS, self._check_gone)

    def _stop_sweep(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None


def _wake(future: asyncio.Future[bool]) -> None:
    """A stream moved for the poll's user, or its deadline passed: not gone."""
    if not future.done():
        future.set_result(False)
