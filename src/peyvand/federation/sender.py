"""The per-destination federation sender (Server-Server API, "Transactions"; DESIGN.md §5).

What is to be sent to each server waits in a durable queue (``FederationOutboxStore``):
PDU rows written in the events' own commit, durable EDUs (device list updates, to-device
messages, signing key updates) written by ``send_edu``. Ephemeral EDUs (typing, receipts,
presence) wait in memory, latest per key. One worker task per destination with work
turns the oldest rows into ``PUT /_matrix/federation/v1/send/{txnId}`` transactions of at
most 50 PDUs and 100 EDUs, one in flight at a time:

- success (200): exactly the rows sent are deleted; per-PDU errors in the response are
  logged, never retried;
- failure (any exception: unreachable, non-2xx, timeout): the rows stay and the same
  transaction (same txnId and body, so the receiver can dedupe) is retried after an
  exponential backoff with jitter, ``min_backoff`` doubling up to ``max_backoff`` (10
  minutes): a dead peer costs one timer and is never given up on;
- ``wake(destination)`` (the peer just talked to us) resets the backoff and retries now;
- catch-up: after a failure or a restart, a backlog of more than ``catchup_threshold`` PDUs
  is collapsed to the newest PDU per room, and the receiver fetches the gap with
  ``/get_missing_events`` (as Synapse's ``PerDestinationQueue`` does). A pending
  transaction whose PDUs were collapsed away is rebuilt with a new txnId, and so is one
  holding typing notifications older than ``typing_ttl`` (they are dropped).

txnIds are ``<start ms>.<counter>``: unique across restarts.

In a deployment (issue 21, ``replicate``) the ``federation_sender`` processes send, each
to the shares of the destinations (by a hash of the name) it holds (``hold_shard``: a
lease per share, each sender's own while it contends, taken over by another sender or an
event writer while it does not: ``wiring.sender_shards``), and every process queues: the
event writers' commits and any process's durable EDUs write rows to the shared queue and
name their destinations on the bus; ephemeral EDUs and wake-ups travel on the bus to the
destination's sending process. The bus may lose a message: each sending process also
looks for queued rows every ``poll_interval`` seconds and whenever its bus connection is
back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from peyvand.background import BackgroundTask, periodic
from peyvand.storage.bus import MAX_PAYLOAD_BYTES, Bus, PayloadTooLarge
from peyvand.storage.federation_outbox import FederationOutboxStore, OutboxRow
from peyvand.types import JsonDict, ServerName

logger = logging.getLogger(__name__)

# Server-Server API, "Transactions": at most 50 PDUs and 100 EDUs per transaction.
MAX_PDUS_PER_TRANSACTION: Final = 50
MAX_EDUS_PER_TRANSACTION: Final = 100
# EDU slots the durable queue always gets when it has rows (and ephemeral EDUs too).
_RESERVED_EDUS: Final = MAX_EDUS_PER_TRANSACTION // 2
# Presence updates per m.presence EDU.
_PRESENCE_PER_EDU: Final = 50
# The bus channel of a deployment's sending processes, and the most bytes of
# destination names one message carries (under the bus's payload limit).
SENDER_CHANNEL: Final = "federation_sender"
_NAMES_BYTES: Final = MAX_PAYLOAD_BYTES - 500
# Servers whose last wake-up told over the bus is remembered (then forgotten at once).
_TOLD_WOKEN_KEPT: Final = 10_000

PduLoader = Callable[[Sequence[str]], Awaitable[Mapping[str, JsonDict]]]


class TransactionTransport(Protocol):
    """How transactions leave: ``FederationTransport.send_transaction`` (signed, with
    discovery). Raises on anything but a 2xx answer, including an unreachable destination."""

    async def send_transaction(
        self,
        destination: ServerName,
        txn_id: str,
        body: JsonDict,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (FederationTransport.send_transaction)
    ) -> Any: ...


@dataclass(slots=True)
class _Ephemeral:
    """One entry of a destination's ephemeral queue. ``kind`` says how it is keyed and
    how ``content`` reads: "typing" (the m.typing content, per room and user), "receipt"
    (one room's part of m.receipt: {receipt_type: {user_id: receipt}}), "presence" (one
    user's entry of m.presence's ``push``), "other" (a whole EDU's content, never merged)."""

    kind: str
    edu_type: str
    content: JsonDict
    queued_at: float


class _EphemeralQueue:
    """Ephemeral EDUs for one destination, latest per key, oldest key first."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, ...], _Ephemeral] = {}
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()

    def add(self, edu_type: str, content: JsonDict, now: float) -> None:
        key: tuple[str, ...]
        if edu_type == "m.typing" and _strings(content, "room_id", "user_id"):
            key = (edu_type, content["room_id"], content["user_id"])
            self._items.pop(key, None)
            self._items[key] = _Ephemeral("typing", edu_type, content, now)
        elif edu_type == "m.receipt" and all(
            isinstance(part, dict) and all(isinstance(users, dict) for users in part.values())
            for part in content.values()
        ):
            for room_id, part in content.items():
                key = (edu_type, room_id)
                old = self._items.get(key)
                merged = _merge_receipts(old.content if old else {}, part)
                self._items[key] = _Ephemeral("receipt", edu_type, merged, now)
        elif (
            edu_type == "m.presence"
            and isinstance(content.get("push"), list)
            and all(isinstance(p, dict) and _strings(p, "user_id") for p in content["push"])
        ):
            for entry in content["push"]:
                key = (edu_type, entry["user_id"])
                self._items.pop(key, None)
                self._items[key] = _Ephemeral("presence", edu_type, entry, now)
        else:
            self._items[(edu_type, str(next(self._counter)))] = _Ephemeral(
                "other", edu_type, content, now
            )

    def expire(self, now: float, typing_ttl: float) -> None:
        """Drop typing notifications queued more than ``typing_ttl`` seconds ago."""
        stale = [k for k, e in self._items.items() if _expired(e, now, typing_ttl)]
        for key in stale:
            del self._items[key]

    def take(self, limit: int) -> list[tuple[tuple[str, ...], _Ephemeral]]:
        """Remove and return the oldest ``limit`` entries."""
        taken = list(itertools.islice(self._items.items(), max(0, limit)))
        for key, _ in taken:
            del self._items[key]
        return taken

    def put_back(
        self, entries: Sequence[tuple[tuple[str, ...], _Ephemeral]], now: float, typing_ttl: float
    ) -> None:
        """Return ``entries`` taken earlier to the front; newer entries with the same key
        win (receipts merge, the newer on top); expired typing is dropped."""
        items: dict[tuple[str, ...], _Ephemeral] = {}
        for key, entry in entries:
            if _expired(entry, now, typing_ttl):
                continue
            newer = self._items.pop(key, None)
            if newer is None:
                items[key] = entry
            elif entry.kind == "receipt":
                merged = _merge_receipts(entry.content, newer.content)
                items[key] = _Ephemeral("receipt", newer.edu_type, merged, newer.queued_at)
            else:
                items[key] = newer
        items.update(self._items)
        self._items = items


def _strings(content: Mapping[str, Any], *keys: str) -> bool:
    return all(isinstance(content.get(k), str) for k in keys)


def _expired(entry: _Ephemeral, now: float, typing_ttl: float) -> bool:
    return entry.kind == "typing" and now - entry.queued_at > typing_ttl


def _merge_receipts(old: JsonDict, new: JsonDict) -> JsonDict:
    """One room's receipts, {receipt_type: {user_id: receipt}}: ``new`` wins per user."""
    merged = {rtype: dict(users) for rtype, users in old.items()}
    for rtype, users in new.items():
        merged.setdefault(rtype, {}).update(users)
    return merged


def _ephemeral_edus(entries: Sequence[tuple[tuple[str, ...], _Ephemeral]]) -> list[JsonDict]:
    edus: list[JsonDict] = []
    presence: list[JsonDict] = []
    for key, entry in entries:
        if entry.kind == "presence":
            presence.append(entry.content)
        elif entry.kind == "receipt":
            edus.append({"edu_type": entry.edu_type, "content": {key[1]: entry.content}})
        else:
            edus.append({"edu_type": entry.edu_type, "content": entry.content})
    for start in range(0, len(presence), _PRESENCE_PER_EDU):
        push = presence[start : start + _PRESENCE_PER_EDU]
        edus.append({"edu_type": "m.presence", "content": {"push": push}})
    return edus


@dataclass(slots=True)
class _Transaction:
    """A transaction as first sent: retried unchanged until it succeeds."""

    txn_id: str
    body: JsonDict
    # The queue rows it carries, deleted on success.
    seqs: list[int]
    ephemeral: list[tuple[tuple[str, ...], _Ephemeral]]

    def holds_expired_typing(self, now: float, typing_ttl: float) -> bool:
        return any(_expired(entry, now, typing_ttl) for _, entry in self.ephemeral)


@dataclass(eq=False, slots=True)
class _Destination:
    name: ServerName
    ephemeral: _EphemeralQueue = field(default_factory=_EphemeralQueue)
    task: asyncio.Task[None] | None = None
    # New work arrived since the worker last looked at the queue.
    dirty: bool = False
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    txn: _Transaction | None = None
    # Failed attempts in a row (0: the destination is up).
    failures: int = 0
    down_since: float = 0.0
    # Current backoff interval (0: none) and when to try next, both in event loop time.
    interval: float = 0.0
    retry_at: float = 0.0
    last_attempt: float = 0.0
    # Check the backlog for catch-up before the next transaction.
    catching_up: bool = False

    def idle(self) -> bool:
        return self.failures == 0 and self.txn is None and not self.ephemeral


class FederationSender:
    def __init__(
        self,
        server_name: ServerName,
        store: FederationOutboxStore,
        transport: TransactionTransport,
        load_pdus: PduLoader,
        *,
        allows: Callable[[ServerName], bool] = lambda _: True,
        clock: Callable[[], float] = time.time,
        min_backoff: float = 2.0,
        max_backoff: float = 600.0,
        catchup_threshold: int = 200,
        typing_ttl: float = 60.0,
        request_timeout: float = 60.0,
        stop_timeout: float = 5.0,
        poll_interval: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        """``load_pdus`` returns the federation JSON of stored events by event ID (absent
        IDs are skipped); ``allows(server)`` is the federation allow/deny list; ``clock``
        gives wall-clock seconds (txnIds, ``origin_server_ts``, typing expiry)."""
        if not 0 < min_backoff <= max_backoff:
            raise ValueError("need 0 < min_backoff <= max_backoff")
        self._server_name = server_name
        self._store = store
        self._transport = transport
        self._load_pdus = load_pdus
        self._allows = allows
        self._clock = clock
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._catchup_threshold = catchup_threshold
        self._typing_ttl = typing_ttl
        self._request_timeout = request_timeout
        self._stop_timeout = stop_timeout
        self._rng = rng or random.Random()
        self._poll_interval = poll_interval
        self._destinations: dict[ServerName, _Destination] = {}
        # A deployment: the bus to the sending process, and whether this process sends.
        self._bus: Bus | None = None
        self._sends = True
        # The destinations are shared by a hash of their name into ``_shards``; this
        # process sends to those of the ``_held`` shards.
        self._shards = 1
        self._held: set[int] = {0}
        self._poll: BackgroundTask | None = None
        self._told_woken: dict[ServerName, float] = {}
        self._looks: set[asyncio.Task[None]] = set()
        self._txn_prefix = ""
        self._txn_counter = itertools.count(1)
        self._started = False
        self._stopping = False
        self._edu_lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------

    def replicate(self, bus: Bus, *, sends: bool, shards: int = 1) -> None:
        """A deployment: what is queued here reaches the sending processes over ``bus``;
        ``sends``: this is one of them or may stand in for one (only they are started),
        sending to the destinations of the shards it holds (``hold_shard``; none until
        then) of ``shards`` (destinations are shared by a hash of their name). See the
        module docstring."""
        if shards < 1:
            raise ValueError("need at least one shard")
        self._bus = bus
        self._sends = sends
        self._shards = shards
        self._held = set()
        if sends:
            bus.subscribe(SENDER_CHANNEL, self._on_message)
            bus.on_reconnect(self._look_soon)
            self._poll = periodic(
                "federation-sender-poll", self._poll_interval, self._look_for_queued
            )

    async def start(self) -> None:
        """Start a worker for every destination with queued rows (catch-up after a
        restart)."""
        if self._started:
            raise RuntimeError("FederationSender already started")
        self._txn_prefix = str(int(self._clock() * 1000))
        self._started = True
        pending = [d for d in await self._store.destinations_with_pending() if self._mine(d)]
        if pending:
            logger.info("federation: resuming queued transactions to %d servers", len(pending))
        for name in pending:
            destination = self._destination(name)
            destination.catching_up = True
            destination.dirty = True
        for destination in list(self._destinations.values()):
            self._kick(destination)
        if self._poll is not None:
            self._poll.start()

    async def stop(self) -> None:
        """Cancel every worker (in flight or backing off) and wait for them, bounded.
        What was not sent stays queued for the next start."""
        self._stopping = True
        if self._poll is not None:
            await self._poll.stop()
        await self._cancel(list(self._destinations.values()))

    async def hold_shard(self, index: int) -> None:
        """A deployment's sending process: send to the destinations of shard ``index``
        from now on (its lease taken), starting with what is queued for them (caught up
        as after a restart)."""
        if not 0 <= index < self._shards:
            raise ValueError(f"no shard {index} of {self._shards}")
        self._held.add(index)
        if not self._started or self._stopping:
            return  # start() finds them in the queue
        pending = await self._store.destinations_with_pending()
        if index not in self._held:
            return  # released while this read
        for name in pending:
            if self._shard_of(name) == index:
                destination = self._destination(name)
                destination.catching_up = True
                destination.dirty = True
                self._kick(destination)

    async def release_shard(self, index: int) -> None:
        """Stop sending to the destinations of shard ``index`` (its lease lost or handed
        back): they are forgotten at once (held again, they start afresh) and their
        workers cancelled and awaited (bounded by ``stop_timeout``, and by the lease's
        own bound on stopping; one still running stops at its next step); what they did
        not send stays queued for the shard's next holder, and their ephemeral EDUs are
        dropped. A transaction cut short may reach its server again from the next
        holder, under another txnId: PDUs are
        deduplicated by their event ID, to-device messages by their ``message_id``,
        device list updates by their ``stream_id``."""
        self._held.discard(index)
        leaving = [d for d in self._destinations.values() if self._shard_of(d.name) == index]
        for destination in leaving:
            del self._destinations[destination.name]
        await self._cancel(leaving)

    async def _cancel(self, destinations: Sequence[_Destination]) -> None:
        """Cancel the workers of ``destinations`` and wait for them, bounded."""
        tasks = [d.task for d in destinations if d.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            _, still_running = await asyncio.wait(tasks, timeout=self._stop_timeout)
            if still_running:
                logger.warning("federation: %d senders did not stop in time", len(still_running))

    # -- queueing --------------------------------------------------------------------

    def rows_for_event(
        self, room_id: str, event_id: str, destinations: Iterable[ServerName]
    ) -> list[OutboxRow]:
        """Queue rows sending one PDU to ``destinations`` (ourselves and denied servers
        left out)."""
        allowed = sorted({d for d in destinations if self._allowed(d)})
        return [OutboxRow.for_pdu(d, room_id, event_id) for d in allowed]

    def notify_new(self, destinations: Iterable[ServerName]) -> None:
        """Rows for ``destinations`` were committed: have their workers send them."""
        names = set(destinations)
        others = sorted(d for d in names if not self._mine(d))
        if others:
            self._tell_sender("queued", others)
        self._queued_here(d for d in names if self._mine(d))

    def _queued_here(self, destinations: Iterable[ServerName]) -> None:
        if not self._started or self._stopping:
            return  # start() finds them in the queue
        for name in destinations:
            destination = self._destination(name)
            destination.dirty = True
            self._kick(destination)

    async def send_edu(
        self, destination: ServerName, edu_type: str, content: JsonDict, *, durable: bool
    ) -> None:
        """Send an EDU with ``destination``'s next transaction. Durable EDUs
        (m.device_list_update, m.direct_to_device, m.signing_key_update) are queued in the
        database first; ephemeral ones (m.typing, m.receipt, m.presence) wait in memory,
        latest per key, and typing older than ``typing_ttl`` is dropped."""
        if durable:
            await self.send_durable_edus([(destination, edu_type, content)])
            return
        self.send_ephemeral([destination], edu_type, content)

    def send_ephemeral(
        self, destinations: Iterable[ServerName], edu_type: str, content: JsonDict
    ) -> None:
        """One ephemeral EDU to each of ``destinations`` (see ``send_edu``); those
        another process sends to get it in one bus message."""
        others: list[ServerName] = []
        for destination in destinations:
            if not self._allowed(destination):
                continue
            if self._mine(destination):
                self._queue_ephemeral(destination, edu_type, content)
            else:
                others.append(destination)
        if others:
            self._tell_ephemeral(others, edu_type, content)

    def _queue_ephemeral(self, destination: ServerName, edu_type: str, content: JsonDict) -> None:
        target = self._destination(destination)
        target.ephemeral.add(edu_type, content, self._clock())
        target.dirty = True
        self._kick(target)

    async def send_durable_edus(self, edus: Sequence[tuple[ServerName, str, JsonDict]]) -> None:
        """Queue durable ``(destination, edu_type, content)`` EDUs in one transaction."""
        allowed = [edu for edu in edus if self._allowed(edu[0])]
        if not allowed:
            return
        # Numbered and committed in the same order (in this process), so a destination's
        # EDUs are sent in the order they were queued.
        async with self._edu_lock:
            await self._store.add([OutboxRow.for_edu(d, t, c) for d, t, c in allowed])
        self.notify_new({d for d, _, _ in allowed})

    def wake(self, destination: ServerName) -> None:
        """``destination`` just talked to us: forget its backoff and retry now (at most
        once per ``min_backoff``, however often it calls)."""
        if not self._mine(destination):
            # Told at most once per min_backoff: every request of a server calls this.
            now = asyncio.get_running_loop().time()
            if now - self._told_woken.get(destination, -self._min_backoff) >= self._min_backoff:
                if len(self._told_woken) > _TOLD_WOKEN_KEPT:
                    self._told_woken.clear()
                self._told_woken[destination] = now
                self._tell_sender("wake", [destination])
            return
        target = self._destinations.get(destination)
        if target is None or target.interval == 0.0:
            return
        target.interval = 0.0
        earliest = max(asyncio.get_running_loop().time(), target.last_attempt + self._min_backoff)
        target.retry_at = min(target.retry_at, earliest)
        target.woken.set()

    # -- a deployment's bus ------------------------------------------------------------

    def _tell_sender(self, kind: str, destinations: Sequence[ServerName]) -> None:
        """Name ``destinations`` to the sending processes: rows queued ("queued") or a
        server that talked to us ("wake"), as few messages as the payload limit lets."""
        if self._bus is None:
            return
        for part in _packed(destinations):
            self._bus.publish(SENDER_CHANNEL, {kind: part})

    def _tell_ephemeral(
        self, destinations: Sequence[ServerName], edu_type: str, content: JsonDict
    ) -> None:
        """Hand an ephemeral EDU for ``destinations`` to the sending processes; a
        presence push too large for one message goes in halves."""
        if self._bus is None:
            return
        for part in _packed(destinations):
            edu = {"destinations": part, "edu_type": edu_type, "content": content}
            try:
                self._bus.publish(SENDER_CHANNEL, {"edu": edu})
            except PayloadTooLarge:
                push = content.get("push") if edu_type == "m.presence" else None
                if not isinstance(push, list) or len(push) < 2:
                    logger.warning("federation: %s too large to relay; dropped", edu_type)
                    return
                half = len(push) // 2
                names = [ServerName(name) for name in part]
                self._tell_ephemeral(names, edu_type, {**content, "push": push[:half]})
                self._tell_ephemeral(names, edu_type, {**content, "push": push[half:]})

    def _on_message(self, payload: dict[str, Any], _sender: str) -> None:
        """The sending process: what another process queued, or asks."""
        queued, woken, edu = payload.get("queued"), payload.get("wake"), payload.get("edu")
        if isinstance(queued, list):
            self._queued_here(
                ServerName(d) for d in queued if isinstance(d, str) and self._mine(ServerName(d))
            )
        if isinstance(woken, list):
            for name in woken:
                if isinstance(name, str) and self._mine(ServerName(name)):
                    self.wake(ServerName(name))
        if isinstance(edu, dict) and self._started and not self._stopping:
            destinations, edu_type, content = (
                edu.get("destinations"), edu.get("edu_type"), edu.get("content")
            )  # fmt: skip
            if (
                isinstance(destinations, list)
                and isinstance(edu_type, str)
                and isinstance(content, dict)
            ):
                for name in destinations:
                    if (
                        isinstance(name, str)
                        and self._allowed(ServerName(name))
                        and self._mine(ServerName(name))
                    ):
                        self._queue_ephemeral(ServerName(name), edu_type, content)

    async def _look_soon(self) -> None:
        """The bus is back: look for queued rows without holding up its other hooks."""
        task = asyncio.create_task(self._look_for_queued(), name="federation-sender-look")
        self._looks.add(task)
        task.add_done_callback(self._looks.discard)

    async def _look_for_queued(self) -> None:
        """A sending process: send what was queued whoever was told (a lost message),
        to the shards it holds (a stand-in holding none asks nothing)."""
        if self._started and not self._stopping and self._held:
            pending = await self._store.destinations_with_pending()
            self._queued_here(d for d in pending if self._mine(d))

    # -- workers ---------------------------------------------------------------------

    def queue_status(self) -> list[tuple[ServerName, int, int]]:
        """Each destination with work or failures: its EDUs and PDUs waiting in memory
        (the PDUs not yet taken into a transaction wait in the database) and its failed
        attempts in a row (for metrics)."""
        out: list[tuple[ServerName, int, int]] = []
        for destination in self._destinations.values():
            if destination.idle():
                continue
            txn = destination.txn
            queued = len(destination.ephemeral)
            if txn is not None:
                queued += len(txn.seqs) + len(txn.ephemeral)
            out.append((destination.name, queued, destination.failures))
        return out

    def _allowed(self, destination: ServerName) -> bool:
        return destination != self._server_name and self._allows(destination)

    def _mine(self, destination: ServerName) -> bool:
        """Whether this process sends to ``destination`` (a shard it holds)."""
        return self._sends and self._shard_of(destination) in self._held

    def _shard_of(self, destination: ServerName) -> int:
        return zlib.crc32(destination.encode()) % self._shards if self._shards > 1 else 0

    def _destination(self, name: ServerName) -> _Destination:
        destination = self._destinations.get(name)
        if destination is None:
            destination = self._destinations[name] = _Destination(name)
        return destination

    def _kick(self, destination: _Destination) -> None:
        if self._started and not self._stopping and destination.task is None:
            destination.task = asyncio.create_task(
                self._run(destination), name=f"federation-sender:{destination.name}"
            )

    async def _run(self, destination: _Destination) -> None:
        try:
            while True:
                await self._wait_for_retry(destination)
                if not self._mine(destination.name):
                    return  # its shard was released while this waited
                destination.dirty = False
                try:
                    if not self._allowed(destination.name):
                        await self._drop(destination)
                        return
                    txn = await self._transaction(destination)
                    if txn is None:
                        if destination.dirty:
                            continue
                        return
                    await self._attempt(destination, txn)
                except Exception:
                    logger.exception("federation: sending to %s failed", destination.name)
                    self._back_off(destination)
        finally:
            destination.task = None
            if destination.idle() and self._destinations.get(destination.name) is destination:
                del self._destinations[destination.name]

    async def _wait_for_retry(self, destination: _Destination) -> None:
        loop = asyncio.get_running_loop()
        while (delay := destination.retry_at - loop.time()) > 0:
            destination.woken.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(destination.woken.wait(), delay)

    async def _drop(self, destination: _Destination) -> None:
        logger.info("federation: dropping everything queued for denied %s", destination.name)
        destination.ephemeral.clear()
        destination.txn = None
        await self._store.delete_destination(destination.name)

    async def _transaction(self, destination: _Destination) -> _Transaction | None:
        """The transaction to send next: the failed one again, or a new one from the
        oldest queued rows and ephemeral EDUs (None: nothing to send)."""
        name = destination.name
        if destination.catching_up:
            destination.catching_up = False
            if await self._store.count_pdus(name) > self._catchup_threshold:
                dropped = await self._store.collapse_to_latest_per_room(name)
                if dropped:
                    logger.info(
                        "federation: catching up with %s: skipping %d older PDUs, sending"
                        " the newest per room",
                        name,
                        dropped,
                    )
                    self._discard(destination)
        now = self._clock()
        if destination.txn is not None and destination.txn.holds_expired_typing(
            now, self._typing_ttl
        ):
            self._discard(destination)
        if destination.txn is not None:
            return destination.txn

        destination.ephemeral.expire(now, self._typing_ttl)
        durable_edus = MAX_EDUS_PER_TRANSACTION - min(len(destination.ephemeral), _RESERVED_EDUS)
        batch = await self._store.pending(name, MAX_PDUS_PER_TRANSACTION, durable_edus)
        loaded: Mapping[str, JsonDict] = {}
        if batch.pdus:
            loaded = await self._load_pdus([p.event_id for p in batch.pdus])
        pdus = [loaded[p.event_id] for p in batch.pdus if p.event_id in loaded]
        if len(pdus) < len(batch.pdus):
            logger.debug("federation: %d queued PDUs no longer exist", len(batch.pdus) - len(pdus))
        seqs = [p.seq for p in batch.pdus] + [e.seq for e in batch.edus]
        # Taken only now: nothing can fail between here and the transaction keeping them.
        ephemeral = destination.ephemeral.take(MAX_EDUS_PER_TRANSACTION - len(batch.edus))
        edus = [e.edu for e in batch.edus] + _ephemeral_edus(ephemeral)
        if not pdus and not edus:
            # Only rows of events that are gone: drop them and look again.
            await self._store.delete(name, seqs)
            if seqs:
                destination.dirty = True
            return None
        body = {
            "origin": self._server_name,
            "origin_server_ts": int(now * 1000),
            "pdus": pdus,
            "edus": edus,
        }
        txn_id = f"{self._txn_prefix}.{next(self._txn_counter)}"
        destination.txn = _Transaction(txn_id, body, seqs, ephemeral)
        return destination.txn

    def _discard(self, destination: _Destination) -> None:
        """Forget the pending transaction (its rows stay queued; its ephemeral EDUs go
        back): the next one gets a new txnId."""
        if destination.txn is not None:
            destination.ephemeral.put_back(
                destination.txn.ephemeral, self._clock(), self._typing_ttl
            )
            destination.txn = None

    async def _attempt(self, destination: _Destination, txn: _Transaction) -> None:
        name = destination.name
        destination.last_attempt = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(self._request_timeout):
                response = await self._transport.send_transaction(
                    name, txn.txn_id, txn.body, timeout=self._request_timeout
                )
        except Exception as exc:
            self._failed(destination, txn, exc)
            return
        destination.txn = None
        self._succeeded(destination)
        logger.debug(
            "federation: sent transaction %s to %s (%d PDUs, %d EDUs)",
            txn.txn_id,
            name,
            len(txn.body["pdus"]),
            len(txn.body["edus"]),
        )
        _log_pdu_errors(name, txn.txn_id, response)
        await self._store.delete(name, txn.seqs)

    def _failed(self, destination: _Destination, txn: _Transaction, exc: Exception) -> None:
        destination.failures += 1
        destination.catching_up = True
        self._back_off(destination)
        reason = str(exc) or type(exc).__name__
        if destination.failures == 1:
            destination.down_since = self._clock()
            logger.info(
                "federation: %s is unreachable (%s); queueing for it and retrying",
                destination.name,
                reason,
            )
        else:
            logger.debug(
                "federation: transaction %s to %s failed again (%s); next try in %.1f s",
                txn.txn_id,
                destination.name,
                reason,
                destination.interval,
            )

    def _succeeded(self, destination: _Destination) -> None:
        if destination.failures:
            logger.info(
                "federation: %s is back after %d failed attempts over %.0f s",
                destination.name,
                destination.failures,
                self._clock() - destination.down_since,
            )
        destination.failures = 0
        destination.interval = 0.0
        destination.retry_at = 0.0

    def _back_off(self, destination: _Destination) -> None:
        if destination.interval <= 0.0:
            destination.interval = self._min_backoff
        else:
            destination.interval = min(destination.interval * 2, self._max_backoff)
        delay = destination.interval * (1 - 0.2 * self._rng.random())
        destination.retry_at = asyncio.get_running_loop().time() + delay


def _packed(names: Sequence[ServerName]) -> list[list[str]]:
    """``names`` in lists of at most ``_NAMES_BYTES`` (UTF-8, quoted) each."""
    parts: list[list[str]] = []
    size = _NAMES_BYTES
    for name in names:
        length = len(name.encode()) + 3
        if size + length > _NAMES_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(name)
        size += length
    return parts


def _log_pdu_errors(destination: ServerName, txn_id: str, response: Any) -> None:
    """The response is ``{"pdus": {event_id: {"error"?}}}``: a PDU the receiver refused is
    logged and not sent again."""
    results = response.get("pdus") if isinstance(response, Mapping) else None
    if not isinstance(results, Mapping):
        logger.warning(
            "federation: %s answered transaction %s without a pdus object", destination, txn_id
        )
        return
    for event_id, result in results.items():
        if not isinstance(result, Mapping) or "error" in result:
            error = result.get("error") if isinstance(result, Mapping) else result
            logger.warning("federation: %s refused %s: %s", destination, event_id, error)
