"""A client's view of rooms: /sync, once or long-polled until a condition holds
(Client-Server API, "Syncing"), and waiting on joined members
(``GET /rooms/{roomId}/joined_members``); ``LongPoll``, for tests that a change wakes a
waiting request.

The callers bound the time (``asyncio.timeout``); ``wait_until_joined`` also bounds its
own attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from harness.client import Account, MatrixClient


async def sync(client: MatrixClient, account: Account, **params: str) -> dict[str, Any]:
    """One /sync with ``params`` as its query string; the response."""
    body: dict[str, Any] = (await client.request("GET", "sync", token=account, params=params)).ok()
    return body


async def sync_since(
    client: MatrixClient, account: Account, since: str | None = None, timeout_ms: int = 0
) -> dict[str, Any]:
    """One /sync from ``since`` (an initial sync without), waiting at most ``timeout_ms``."""
    params = {"timeout": str(timeout_ms)}
    if since is not None:
        params["since"] = since
    return await sync(client, account, **params)


async def sync_until(
    client: MatrixClient,
    account: Account,
    done: Callable[[dict[str, Any]], bool],
    since: str | None = None,
) -> dict[str, Any]:
    """Long-poll /sync (from ``since``) until ``done`` holds for a response; that response."""
    while True:
        params = {"timeout": "1000"}
        if since is not None:
            params["since"] = since
        response = (await client.request("GET", "sync", token=account, params=params)).ok()
        if done(response):
            return dict(response)
        since = response["next_batch"]


def invited_to(room_id: str) -> Callable[[dict[str, Any]], bool]:
    """A ``sync_until`` condition: the response lists an invite to ``room_id``."""
    return lambda r: room_id in r.get("rooms", {}).get("invite", {})


def has_receipt(room_id: str, user_id: str, event_id: str) -> Callable[[dict[str, Any]], bool]:
    """A ``sync_until`` condition: the room's ephemeral events hold ``user_id``'s read
    receipt of ``event_id``."""

    def done(response: dict[str, Any]) -> bool:
        room = response.get("rooms", {}).get("join", {}).get(room_id, {})
        return any(
            user_id in e.get("content", {}).get(event_id, {}).get("m.read", {})
            for e in room.get("ephemeral", {}).get("events", [])
            if e.get("type") == "m.receipt"
        )

    return done


def knocked_on(room_id: str) -> Callable[[dict[str, Any]], bool]:
    """A ``sync_until`` condition: the response lists a knock on ``room_id``."""
    return lambda r: room_id in r.get("rooms", {}).get("knock", {})


async def wait_until_joined(
    client: MatrixClient, account: Account, room_id: str, user_id: str, attempts: int
) -> None:
    """Poll ``account``'s joined members of ``room_id`` every 100 ms until ``user_id`` is
    one, at most ``attempts`` times; fail if they never are."""
    for _ in range(attempts):
        members = (
            await client.request("GET", f"rooms/{quote(room_id)}/joined_members", token=account)
        ).ok()["joined"]
        if user_id in members:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{user_id} never appeared in {room_id}")


T = TypeVar("T")


class LongPoll(Generic[T]):
    """A waiting request (a /sync with a timeout, a legacy /events, a download of media not
    yet uploaded, ...) in a test that a change wakes it (STYLE.md, habit 14)::

        poll = await LongPoll.start(sync_since(client, bob, token, timeout_ms=10_000), 10)
        poll.assert_waiting()
        ...  # the change
        response = await poll.woken()

    Without ``assert_waiting`` such a test also passes when the request never waited (or
    timed out before the change, on a slow machine): it would not test the wake-up at all.
    ``woken`` then requires the answer in under half the request's own timeout, so it was
    woken, not timed out.
    """

    def __init__(self, task: asyncio.Task[T], timeout_s: float, started: float) -> None:
        self._task = task
        self._timeout_s = timeout_s
        self._started = started

    @classmethod
    async def start(
        cls, request: Coroutine[Any, Any, T], timeout_s: float, settle_s: float = 0.3
    ) -> LongPoll[T]:
        """Send ``request`` (which the server holds for at most ``timeout_s`` seconds) and
        give it ``settle_s`` seconds to reach the server and wait there."""
        started = time.monotonic()
        task = asyncio.create_task(request)
        await asyncio.sleep(settle_s)
        return cls(task, timeout_s, started)

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def assert_waiting(self) -> None:
        """Right before the change: the request has not been answered yet."""
        if self._task.done():
            outcome = self._task.exception() or self._task.result()
            raise AssertionError(
                f"the request was answered after {self.elapsed():.1f} s, before the change "
                f"that should wake it: {outcome!r}"
            )

    async def woken(self) -> T:
        """The answer, which must come within half the request's timeout of its start."""
        remaining = self._timeout_s / 2 - self.elapsed()
        done, _ = await asyncio.wait({self._task}, timeout=max(remaining, 0.0))
        if not done:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            raise AssertionError(
                f"not woken: no answer {self.elapsed():.1f} s after the request started "
                f"(its timeout is {self._timeout_s:g} s)"
            )
        return self._task.result()
