"""One application service's transactions (Application Service API, "Pushing events"):
its own queue and task, so a slow or dead appservice delays only itself.

- Events go out in stream order, at most ``MAX_EVENTS_PER_TXN`` a transaction, with
  the extras (ephemeral data, to-device messages, MSC3202 device lists and key counts)
  ``AppServiceExtras.collect`` gives after the last position sent. First those the
  database holds after the appservice's acknowledged position up to where the server
  stood when the sender started (catch-up, filtered by interest), then those handed over
  live. At most ``LIVE_QUEUE_MAX`` live events are queued: past that (an appservice
  down for long) they are dropped and read again from the database.
- A transaction is stored (``PendingTxn``: its ID and whole body) before it is sent and
  sent again unchanged, same ID and content, until the appservice answers 200 (also
  after a restart): the spec forbids altering a transaction on retries. The 200 deletes
  it and moves the appservice's positions in the database transaction that stores the
  next one (one commit a transaction under load), or alone when none follows; a 200
  not yet stored when the server dies sends that transaction once more.
- While the appservice fails, the same transaction is retried after 1 s, doubling up to
  5 minutes (``retry_now`` cuts a wait short). ``status`` tells how it is going.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from typing import Final, Literal

from peyvand.background import BackgroundTask
from peyvand.federation.appservice_client import AppServiceError, AppServiceTarget
from peyvand.services.appservice.extras import AppServiceExtras
from peyvand.services.appservice.interest import AppServiceInterest
from peyvand.services.appservice.registration import ApplicationService
from peyvand.storage.appservice_txns import AppServiceProgress, AppServiceTxnStore, PendingTxn
from peyvand.types import EventID, JsonDict

__all__ = [
    "INITIAL_BACKOFF",
    "LIVE_QUEUE_MAX",
    "MAX_BACKOFF",
    "MAX_EVENTS_PER_TXN",
    "AppServiceSender",
    "SenderDeps",
    "SenderStatus",
]

logger = logging.getLogger(__name__)

# Synapse's MAX_PERSISTENT_EVENTS_PER_TRANSACTION, and its limit of ephemeral events and
# to-device messages per transaction.
MAX_EVENTS_PER_TXN: Final = 100
MAX_EXTRAS_PER_TXN: Final = 100
INITIAL_BACKOFF: Final = 1.0
MAX_BACKOFF: Final = 300.0
# Live events queued per appservice; past that they are read from the database.
LIVE_QUEUE_MAX: Final = 10_000
# Stored events read per catch-up query (those the appservice wants are kept).
_CATCH_UP_PAGE: Final = 500

State = Literal["up", "backing_off", "down", "no_url"]


@dataclass(frozen=True, slots=True)
class SenderStatus:
    """How an appservice's transactions are going (the admin API shows it).

    ``state``: ``up`` while the last attempt succeeded (or none failed yet),
    ``backing_off`` after a failure, waiting to retry, and ``down`` once the wait has
    grown to its cap; ``no_url`` for an appservice registered without a ``url``, which
    gets no transactions. ``queue_length`` counts the events waiting in memory and in the
    pending transaction; ``catching_up`` tells that more are read from the database.
    """

    appservice_id: str
    url: str | None
    state: State
    events_position: int
    last_txn_id: int
    last_success_ts: int | None
    queue_length: int
    catching_up: bool
    consecutive_failures: int
    last_error: str | None
    next_retry_ts: int | None

    @classmethod
    def without_sender(cls, appservice_id: str, url: str | None) -> SenderStatus:
        """An appservice with no sender (no ``url``, or not started yet)."""
        state: State = "no_url" if url is None else "up"
        return cls(appservice_id, url, state, 0, 0, None, 0, False, 0, None, None)

    def as_json(self) -> JsonDict:
        return {
            "id": self.appservice_id,
            "url": self.url,
            "state": self.state,
            "events_position": self.events_position,
            "last_txn_id": str(self.last_txn_id) if self.last_txn_id else None,
            "last_success_ts": self.last_success_ts,
            "queue_length": self.queue_length,
            "catching_up": self.catching_up,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "next_retry_ts": self.next_retry_ts,
        }


@dataclass(frozen=True, slots=True)
class SenderDeps:
    """What every sender shares, provided by ``AppServiceTransactions``."""

    store: AppServiceTxnStore
    interest: AppServiceInterest
    extras: AppServiceExtras
    push: Callable[[AppServiceTarget, str, JsonDict], Awaitable[None]]
    # The client events of (stream position, event ID) pairs, in order; those gone
    # since are left out (``TransactionEvents.load``).
    load: Callable[[Sequence[tuple[int, EventID]]], Awaitable[list[JsonDict]]]
    now_ms: Callable[[], int]


@dataclass(frozen=True, slots=True)
class _Queued:
    stream_ordering: int
    event_id: EventID
    # An invite from another server handed over live: its position was taken before it
    # was stored, so events below it may not be committed yet.
    invite: bool = False


class AppServiceSender:
    def __init__(
        self,
        appservice: ApplicationService,
        progress: AppServiceProgress,
        catch_up_to: int,
        deps: SenderDeps,
    ) -> None:
        assert appservice.url is not None
        self.appservice = appservice
        self._target = AppServiceTarget(appservice.url, appservice.hs_token)
        self._deps = deps
        self._position = progress.events_position
        self._extras_position = progress.extras_position
        pending_id = progress.pending.txn_id if progress.pending is not None else 0
        self._last_txn_id = max(progress.last_txn_id, pending_id)
        self._last_success_ts = progress.last_success_ts
        self._pending = progress.pending
        # The transaction last answered 200 (and when) while its acknowledgement is not
        # stored yet: it is stored with the next transaction, in one commit.
        self._answered: tuple[PendingTxn, int] | None = None
        # Catch-up: the database is read in (_read_to, _catch_up_to].
        self._read_to = progress.pending.events_position if progress.pending else self._position
        self._catch_up_to = max(catch_up_to, self._read_to)
        # Every event up to here is queued or not wanted (the next txn may move past it).
        self._seen_to = self._read_to
        # The newest event taken into a transaction.
        self._taken_to = self._read_to
        self._backlog: deque[_Queued] = deque()
        self._live: deque[_Queued] = deque()
        # Set once the live queue is full: the newest position not queued.
        self._overflow_to: int | None = None
        self._extras_due = True
        self._failures = 0
        self._last_error: str | None = None
        self._backoff = INITIAL_BACKOFF
        self._next_retry_ms: int | None = None
        self._wakeup = asyncio.Event()
        self._retry = asyncio.Event()
        # The database write under way (``_write``).
        self._writing: asyncio.Future[None] | None = None
        self._task = BackgroundTask(f"appservice:{appservice.id}", self._run)

    # -- control -------------------------------------------------------------------------

    def start(self) -> None:
        self._task.start()
        self._wakeup.set()

    async def stop(self) -> None:
        await self._task.stop()
        if self._writing is not None:
            # A write the stop interrupted is finished first: a restarted sender reads
            # the stored progress.
            try:
                await self._writing
            except Exception:
                logger.exception("storing appservice %s's progress failed", self.appservice.id)
            self._writing = None
        if self._answered is not None:
            # Stored now, so that it is not sent again after the restart.
            try:
                await self._deps.store.acknowledge(self.appservice.id, *self._answered)
            except Exception:
                logger.exception(
                    "acknowledging appservice %s's last transaction failed", self.appservice.id
                )

    def reloaded(self, appservice: ApplicationService) -> None:
        """The registry was reloaded and this appservice's registration is unchanged:
        ``appservice`` (equal to the one in use) is the registry's object from now on."""
        assert appservice == self.appservice
        self.appservice = appservice

    def on_event(self, stream_ordering: int, event_id: EventID, *, invite: bool = False) -> None:
        """A committed event the appservice is interested in (live); ``invite``: an
        invite from another server, whose position does not tell that the events below
        it are committed (it moves the acknowledged position only up to ``on_seen``)."""
        if stream_ordering <= self._catch_up_to:
            return
        if self._overflow_to is not None or len(self._live) >= LIVE_QUEUE_MAX:
            self._overflow_to = max(self._overflow_to or 0, stream_ordering)
        elif self._live and stream_ordering < self._live[-1].stream_ordering:
            # An invite from another server, stored after events with later positions
            # were committed (or an event below an invite): kept in stream order.
            at = bisect.bisect(self._live, stream_ordering, key=lambda q: q.stream_ordering)
            self._live.insert(at, _Queued(stream_ordering, event_id, invite))
        else:
            self._live.append(_Queued(stream_ordering, event_id, invite))
        self._wakeup.set()

    def on_seen(self, stream_ordering: int) -> None:
        """Every committed event up to ``stream_ordering`` was offered to ``on_event``."""
        if stream_ordering > self._catch_up_to:
            self._seen_to = max(self._seen_to, stream_ordering)

    def reread(self, stream_ordering: int) -> None:
        """The events up to ``stream_ordering`` are to be read from the database (their
        interest could not be decided live)."""
        self._overflow_to = max(self._overflow_to or 0, stream_ordering)
        self._wakeup.set()

    def on_extras(self) -> None:
        self._extras_due = True
        self._wakeup.set()

    def retry_now(self) -> bool:
        """End a backoff wait now; False if the sender was not waiting to retry."""
        if self._next_retry_ms is None:
            return False
        self._retry.set()
        return True

    def status(self) -> SenderStatus:
        pending = self._pending.event_count if self._pending is not None else 0
        state: State = "up"
        if self._failures:
            state = "down" if self._backoff >= MAX_BACKOFF else "backing_off"
        return SenderStatus(
            appservice_id=self.appservice.id,
            url=self.appservice.url,
            state=state,
            events_position=self._position,
            last_txn_id=self._last_txn_id,
            last_success_ts=self._last_success_ts,
            queue_length=len(self._backlog) + len(self._live) + pending,
            catching_up=self._read_to < self._catch_up_to or self._overflow_to is not None,
            consecutive_failures=self._failures,
            last_error=self._last_error,
            next_retry_ts=self._next_retry_ms,
        )

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self._drain()
            except Exception:
                # A database error: what was queued stays queued and is tried again.
                logger.exception("transactions to appservice %s failed", self.appservice.id)
                self._last_error = "internal error (see the server log)"
                await self._wait_backoff()
                self._wakeup.set()

    async def _drain(self) -> None:
        while True:
            txn = self._pending if self._pending is not None else await self._build()
            if txn is None:
                if self._answered is not None:
                    answered = self._answered
                    await self._write(self._deps.store.acknowledge(self.appservice.id, *answered))
                    await self._acknowledged(answered)
                return
            await self._deliver(txn)

    async def _build(self) -> PendingTxn | None:
        """The next transaction, stored as pending; None when there is nothing to send."""
        queued = await self._peek(MAX_EVENTS_PER_TXN)
        extras = None
        if queued or self._extras_due:
            self._extras_due = False
            extras = await self._deps.extras.collect(
                self.appservice, self._extras_position, MAX_EXTRAS_PER_TXN
            )
        if not queued and (extras is None or extras.count == 0):
            if extras is not None:
                self._extras_position = extras.position
            return None
        events = await self._deps.load([(q.stream_ordering, q.event_id) for q in queued])
        body: JsonDict = {"events": events}
        if extras is not None:
            body.update(extras.fields)
        taken_to = queued[-1].stream_ordering if queued else 0
        # A live invite's own position does not move the acknowledged position.
        events_to = max((q.stream_ordering for q in queued if not q.invite), default=0)
        drained = len(queued) == len(self._backlog) + len(self._live)
        if drained and self._read_to >= self._catch_up_to and self._overflow_to is None:
            position = max(self._seen_to, events_to)
        else:
            position = min(taken_to, max(self._seen_to, events_to))
        txn = PendingTxn(
            txn_id=self._last_txn_id + 1,
            body=body,
            events_position=max(position, self._position),
            extras_position=extras.position if extras is not None else self._extras_position,
            event_count=len(events),
        )
        answered = self._answered
        await self._write(self._deps.store.store_pending(self.appservice.id, txn, answered))
        self._last_txn_id = txn.txn_id
        self._pending = txn
        self._take(queued)
        self._taken_to = max(self._taken_to, taken_to)
        if extras is not None and extras.count >= MAX_EXTRAS_PER_TXN:
            self._extras_due = True
        if answered is not None:
            await self._acknowledged(answered)
        return txn

    async def _peek(self, limit: int) -> list[_Queued]:
        """The first ``limit`` events waiting: those caught up on from the database
        first, then the live ones."""
        if self._overflow_to is not None:
            # The live queue overflowed: it and what came since are read from the
            # database, after what is already queued from there.
            self._live.clear()
            self._read_to = max(self._read_to, self._taken_to)
            self._catch_up_to = max(self._catch_up_to, self._overflow_to)
            self._overflow_to = None
        while len(self._backlog) < limit and self._read_to < self._catch_up_to:
            await self._read_backlog()
        found = list(islice(self._backlog, limit))
        if len(found) < limit and self._read_to >= self._catch_up_to:
            found.extend(islice(self._live, limit - len(found)))
        return found

    def _take(self, queued: Sequence[_Queued]) -> None:
        """Remove exactly the entries ``queued`` from the queues: a late invite inserted
        among them (``on_event``) while the transaction was being built stays queued."""
        taken = {id(q) for q in queued}
        remaining = len(taken)
        for queue in (self._backlog, self._live):
            kept: list[_Queued] = []
            while remaining and queue:
                entry = queue.popleft()
                if id(entry) in taken:
                    remaining -= 1
                else:
                    kept.append(entry)
            queue.extendleft(reversed(kept))

    async def _write(self, write: Awaitable[None]) -> None:
        """Run a database write to its end even when the sender is stopped meanwhile:
        a write cancelled inside its database transaction (SQLite's ``BEGIN``) would
        leave the shared writer connection in it. ``stop`` waits for it."""
        task = asyncio.ensure_future(write)
        self._writing = task
        try:
            await asyncio.shield(task)
        finally:
            if task.done():
                self._writing = None

    async def _read_backlog(self) -> None:
        """The next page of stored events, those the appservice wants kept."""
        rows = await self._deps.store.events_after(self._read_to, self._catch_up_to, _CATCH_UP_PAGE)
        interest = self._deps.interest
        for row in rows:
            # An event is decided with the members at it (its state group), as it was
            # live; an invite from another server (no state here) with the room's now.
            wanted = None
            if row.state_group is not None:
                try:
                    wanted = bool(await interest.wanted_at([self.appservice], row, row.state_group))
                except Exception:
                    # (A state group that cannot be read: decided with the room's
                    # members now rather than holding every later event back.)
                    logger.exception("reading the state at %s failed", row.event_id)
            if wanted is None:
                wanted = await interest.is_interested(
                    self.appservice, row.room_id, row.sender, row.type, row.state_key
                )
            if wanted:
                self._backlog.append(_Queued(row.stream_ordering, row.event_id))
        self._read_to = rows[-1].stream_ordering if rows else self._catch_up_to
        self._seen_to = max(self._seen_to, self._read_to)

    async def _deliver(self, txn: PendingTxn) -> None:
        """Send ``txn`` until the appservice answers 200; it is acknowledged in the
        database with the next transaction stored (``_build``) or alone (``_drain``)."""
        while True:
            try:
                await self._deps.push(self._target, str(txn.txn_id), txn.body)
                break
            except AppServiceError as exc:
                self._failures += 1
                self._last_error = str(exc)
                logger.info(
                    "transaction %d to appservice %s failed (%s): retrying in %.0f s",
                    txn.txn_id,
                    self.appservice.id,
                    exc,
                    self._backoff,
                )
                await self._wait_backoff()
        now = self._deps.now_ms()
        txn = self._below_queued(txn)
        self._answered = (txn, now)
        self._pending = None
        self._position = txn.events_position
        self._extras_position = txn.extras_position
        self._last_success_ts = now
        self._failures = 0
        self._last_error = None
        self._backoff = INITIAL_BACKOFF

    def _below_queued(self, txn: PendingTxn) -> PendingTxn:
        """``txn`` with its events position kept below every entry still queued (a late
        invite inserted under it while it was built), so that a restart still reads it."""
        fronts = [queue[0].stream_ordering for queue in (self._backlog, self._live) if queue]
        if not fronts or min(fronts) > txn.events_position:
            return txn
        return replace(txn, events_position=max(self._position, min(fronts) - 1))

    async def _acknowledged(self, answered: tuple[PendingTxn, int]) -> None:
        """``answered``'s acknowledgement is stored: the extras it carried are done."""
        if self._answered is answered:
            self._answered = None
        txn = answered[0]
        if txn.extras_position is not None:
            await self._deps.extras.acknowledged(self.appservice, txn.extras_position)

    async def _wait_backoff(self) -> None:
        """Wait the current backoff (or until ``retry_now``), then double it."""
        delay = self._backoff
        self._next_retry_ms = self._deps.now_ms() + int(delay * 1000)
        self._retry.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._retry.wait(), delay)
        self._next_retry_ms = None
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)
