"""The bus between the processes of a deployment (issue 21, "Transport"): small JSON
messages (stream positions, cache invalidations, wake-ups) published on named channels.

Delivery contract, the same for every implementation:

- at most once, and in publish order per sending process: a message published while the
  sending or the receiving connection is down may be lost, and nothing tells the
  receiver which. A receiver that keeps state from messages registers ``on_reconnect``
  and re-reads the truth from the database there (stream positions): the hooks run once
  the receiving connection is back and listening, so whatever it missed is in what the
  hook reads and whatever comes after reaches it as messages;
- a loss on the sending side (a batch whose NOTIFY failed, messages dropped from a full
  queue) is never counted as sent: ``sent`` answers False for a window that had one.
  Once the sending connection is back, the ``on_send_lost`` hooks run, so the sender
  can publish what makes the receivers forget what they may have missed (the
  ``CacheRelay``'s "drop everything");
- the sending process's own subscribers get its messages too, at once (``call_soon``),
  whether or not the database connection is up;
- identical messages (same channel, same payload) sent in one batch may arrive once:
  messages carry positions and invalidations, for which a repeat says nothing new;
- a payload is a JSON object of at most ``MAX_PAYLOAD_BYTES`` once encoded (PostgreSQL's
  NOTIFY takes less than 8,000 bytes, and the sender's name goes with it); a larger one
  is refused at ``publish`` with ``PayloadTooLarge``. Subscribers receive the decoded
  object (lists where tuples were sent) and must not change it: several share it.

``LocalBus`` is the single-process bus; ``PostgresBus`` carries messages between
processes over PostgreSQL LISTEN/NOTIFY. A Redis bus could replace it behind ``Bus``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import orjson

from peyvand.background import BackgroundTask

logger = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 7900
# PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more.
_NOTIFY_LIMIT_BYTES = 8000
_CHANNEL = re.compile(r"[a-z_][a-z0-9_]{0,62}")

Subscriber = Callable[[dict[str, Any], str], None]
"""Called on the event loop with a message's payload and the name of the process that
sent it; it should be quick, and start a task of its own for work that awaits."""
ReconnectHook = Callable[[], Awaitable[None]]
SendLostHook = Callable[[], None]
"""Called on the event loop, quickly (it publishes), after a send-side loss."""


class PayloadTooLarge(ValueError):
    """A message whose JSON is longer than ``MAX_PAYLOAD_BYTES``."""


class Bus(Protocol):
    def publish(self, channel: str, payload: Mapping[str, object]) -> None:
        """Send ``payload`` to the subscribers of ``channel`` in every process; returns at
        once (the message is queued). Raises ``ValueError`` for a bad channel name,
        ``PayloadTooLarge`` for a payload over the limit, ``TypeError`` for one that is
        not JSON, and ``RuntimeError`` once the bus is stopped."""

    def subscribe(self, channel: str, callback: Subscriber) -> None:
        """Call ``callback`` for every message on ``channel`` from now on (from the moment
        the process listens on it, when it subscribes after ``start``)."""

    def on_reconnect(self, hook: ReconnectHook) -> None:
        """Await ``hook`` after the bus lost its connection and listens again: messages
        may have been lost in between."""

    def on_send_lost(self, hook: SendLostHook) -> None:
        """Call ``hook`` once messages this process published were lost and it can send
        again (before the next batch goes out; what it publishes is queued behind what
        waits already)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def check_channel(channel: str) -> None:
    """Channel names are lower-case identifiers of at most 63 characters (PostgreSQL's)."""
    if not _CHANNEL.fullmatch(channel):
        raise ValueError(f"bus channel {channel!r} is not a lower-case identifier (a-z, 0-9, _)")


def encode(channel: str, payload: Mapping[str, object]) -> bytes:
    """``payload`` as compact JSON, checked against the channel rules and the size limit."""
    check_channel(channel)
    body = orjson.dumps(payload)
    if len(body) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(
            f"bus message on {channel!r} is {len(body)} bytes of JSON; "
            f"at most {MAX_PAYLOAD_BYTES} are carried"
        )
    return body


class _Subscribers:
    """Callbacks per channel, and delivery of one message to them."""

    def __init__(self) -> None:
        self._callbacks: dict[str, list[Subscriber]] = {}

    def add(self, channel: str, callback: Subscriber) -> None:
        check_channel(channel)
        self._callbacks.setdefault(channel, []).append(callback)

    def channels(self) -> set[str]:
        return set(self._callbacks)

    def wanted(self, channel: str) -> bool:
        return channel in self._callbacks

    def deliver_json(self, channel: str, body: bytes, sender: str) -> None:
        self.deliver(channel, orjson.loads(body), sender)

    def deliver(self, channel: str, payload: dict[str, Any], sender: str) -> None:
        for callback in tuple(self._callbacks.get(channel, ())):
            try:
                callback(payload, sender)
            except Exception:
                logger.exception(
                    "bus subscriber of %s failed on a message from %s", channel, sender
                )


class LocalBus:
    """The bus of a deployment of one process: a message goes to this process's own
    subscribers, on the next turn of the event loop. Payloads are encoded and decoded as
    on ``PostgresBus``, so a message too large or not JSON fails here too; nothing is
    ever lost, so the ``on_reconnect`` hooks never run."""

    def __init__(self, sender: str = "main") -> None:
        self._sender = sender
        self._subscribers = _Subscribers()
        self._stopped = False

    def publish(self, channel: str, payload: Mapping[str, object]) -> None:
        if self._stopped:
            raise RuntimeError("publish on a stopped bus")
        body = encode(channel, payload)
        if self._subscribers.wanted(channel):
            asyncio.get_running_loop().call_soon(
                self._subscribers.deliver_json, channel, body, self._sender
            )

    def subscribe(self, channel: str, callback: Subscriber) -> None:
        self._subscribers.add(channel, callback)

    def on_reconnect(self, hook: ReconnectHook) -> None:
        """Kept for the protocol: one process never loses its own messages."""

    def on_send_lost(self, hook: SendLostHook) -> None:
        """Kept for the protocol: nothing is ever lost here."""

    async def start(self) -> None:
        self._stopped = False

    async def stop(self) -> None:
        self._stopped = True


class PostgresBus:
    """The bus over PostgreSQL LISTEN/NOTIFY, on two connections of its own.

    The listening connection LISTENs on every subscribed channel; it is pinged every
    ``ping_seconds`` so that a connection gone silent is noticed too. When it drops, the
    bus connects again with a growing delay (``backoff_seconds``: first and largest,
    with jitter), LISTENs again and then awaits the ``on_reconnect`` hooks in turn.

    The sending connection runs with ``synchronous_commit = off`` (a NOTIFY commits a
    transaction of its own). One background task sends the queue in order, up to
    ``max_batch`` messages per round trip (one statement, so one transaction). When
    sending fails, the batch in flight is lost; messages published while the sending
    connection is down wait in the queue, of which at most ``max_queued`` are kept
    (the oldest are dropped beyond that). Either loss makes ``sent`` False for the
    messages it waits for, and has the ``on_send_lost`` hooks run once a connection to
    send on is open again. ``stop`` sends what is queued, for at most
    ``flush_seconds``, before it closes both connections.

    A NOTIFY reaches every listening connection, this process's own too. The NOTIFY
    payload is ``["<sender>",<payload>]``, and messages under this process's name are not
    delivered a second time, so the names of a deployment's processes are expected to be
    distinct, as the workers' configuration makes them. The loss of the sending
    connection is announced to the other processes only by what the ``on_send_lost``
    hooks publish; stream positions they missed reach them through their own periodic
    re-reading.
    """

    def __init__(
        self,
        dsn: str,
        sender: str,
        *,
        max_batch: int = 100,
        max_queued: int = 10_000,
        backoff_seconds: tuple[float, float] = (0.1, 5.0),
        ping_seconds: float = 5.0,
        connect_timeout_seconds: float = 10.0,
        flush_seconds: float = 1.0,
    ) -> None:
        prefix = orjson.dumps([sender])[:-1] + b","
        if len(prefix) + MAX_PAYLOAD_BYTES + 1 >= _NOTIFY_LIMIT_BYTES:
            raise ValueError(f"bus sender name {sender!r} is too long")
        self._dsn = dsn
        self._sender = sender
        self._prefix = prefix.decode()
        self._max_batch = max_batch
        self._max_queued = max_queued
        self._backoff_min, self._backoff_max = backoff_seconds
        self._ping_seconds = ping_seconds
        self._connect_timeout = connect_timeout_seconds
        self._flush_seconds = flush_seconds
        self._subscribers = _Subscribers()
        self._hooks: list[ReconnectHook] = []
        self._lost_hooks: list[SendLostHook] = []
        # Messages lost since the last run of the ``on_send_lost`` hooks.
        self._lost_unannounced = False
        self._queue: deque[tuple[str, str]] = deque()
        self._dropped = 0
        self._queued = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        # Messages published so far, and those sent or lost so far (in publish order):
        # ``sent``'s waiters, each with the count it waits for, told whether any of the
        # messages it waits for was lost.
        self._published = 0
        self._done = 0
        self._waiters: list[tuple[int, asyncio.Future[bool]]] = []
        self._attention = asyncio.Event()
        self._listener: Any = None
        self._listening: set[str] = set()
        self._notifier: Any = None
        self._state = "new"
        self._listen_task = BackgroundTask(f"bus {sender} listen", self._keep_listening)
        self._send_task = BackgroundTask(f"bus {sender} send", self._keep_sending)

    @property
    def connected(self) -> bool:
        """Whether both connections are open (the sending one reconnects when next used)."""
        return all(
            conn is not None and not conn.is_closed() for conn in (self._listener, self._notifier)
        )

    def publish(self, channel: str, payload: Mapping[str, object]) -> None:
        if self._state == "stopped":
            raise RuntimeError("publish on a stopped bus")
        body = encode(channel, payload)
        if self._subscribers.wanted(channel):
            asyncio.get_running_loop().call_soon(
                self._subscribers.deliver_json, channel, body, self._sender
            )
        if len(self._queue) >= self._max_queued:
            self._queue.popleft()
            self._dropped += 1
            self._finished(1, lost=True)
        self._published += 1
        self._queue.append((channel, f"{self._prefix}{body.decode()}]"))
        self._drained.clear()
        self._queued.set()

    def subscribe(self, channel: str, callback: Subscriber) -> None:
        self._subscribers.add(channel, callback)
        self._attention.set()

    async def sent(self, seconds: float) -> bool:
        """Wait until every message published so far and not yet sent has been handed
        to PostgreSQL (so the other processes' connections have it before this one
        answers the request that caused it: read-your-writes across processes): True.
        False as soon as one of them is lost, or after ``seconds`` (the sending
        connection is down)."""
        if self._done >= self._published:
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._published, waiter))
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), seconds)
        except TimeoutError:
            return False

    def _finished(self, count: int, *, lost: bool = False) -> None:
        """``count`` more messages were sent, or lost: every waiter still waiting was
        waiting for some of them (they are finished in publish order)."""
        self._done += count
        if lost:
            self._lost_unannounced = True
        if not self._waiters:
            return
        waiting = []
        for target, waiter in self._waiters:
            if waiter.done():
                continue
            if lost:
                waiter.set_result(False)
            elif target > self._done:
                waiting.append((target, waiter))
            else:
                waiter.set_result(True)
        self._waiters = waiting

    def on_reconnect(self, hook: ReconnectHook) -> None:
        self._hooks.append(hook)

    def on_send_lost(self, hook: SendLostHook) -> None:
        self._lost_hooks.append(hook)

    def _announce_loss(self) -> None:
        """Run the ``on_send_lost`` hooks: a connection to send on is open again."""
        self._lost_unannounced = False
        for hook in tuple(self._lost_hooks):
            try:
                hook()
            except Exception:
                logger.exception("bus %s: a send-loss hook failed", self._sender)

    async def start(self) -> None:
        """Connect and LISTEN (raising when the database cannot be reached), then run."""
        if self._state != "new":
            raise RuntimeError("a bus starts once")
        self._listener = await self._connect_listener()
        try:
            self._notifier = await self._connect("send", {"synchronous_commit": "off"})
        except BaseException:
            await _close(self._listener)
            raise
        self._state = "running"
        self._listen_task.start()
        self._send_task.start()

    async def stop(self) -> None:
        if self._state == "running" and self._notifier is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), self._flush_seconds)
        self._state = "stopped"
        await self._send_task.stop()
        await self._listen_task.stop()
        listener, self._listener = self._listener, None
        notifier, self._notifier = self._notifier, None
        await _close(listener)
        await _close(notifier)

    async def _connect(self, role: str, settings: dict[str, str] | None = None) -> Any:
        import asyncpg  # only a deployment's processes load the PostgreSQL driver

        return await asyncpg.connect(
            self._dsn,
            timeout=self._connect_timeout,
            server_settings={"application_name": f"peyvand bus {role} {self._sender}"[:63]}
            | (settings or {}),
        )

    async def _connect_listener(self) -> Any:
        conn = await self._connect("listen")
        self._listening = set()
        conn.add_termination_listener(lambda _conn: self._attention.set())
        try:
            await self._listen_new(conn)
        except BaseException:
            await _close(conn)
            raise
        return conn

    async def _listen_new(self, conn: Any) -> None:
        for channel in sorted(self._subscribers.channels() - self._listening):
            await conn.add_listener(channel, self._on_notification)
            self._listening.add(channel)

    def _on_notification(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        if payload.startswith(self._prefix):
            return
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            message = None
        if (
            not isinstance(message, list)
            or len(message) != 2
            or not isinstance(message[0], str)
            or not isinstance(message[1], dict)
        ):
            logger.warning("bus: a notification on %s is not a bus message; ignored", channel)
            return
        self._subscribers.deliver(channel, message[1], message[0])

    async def _keep_listening(self) -> None:
        delay = self._backoff_min
        while True:
            connected_at = time.monotonic()
            await self._watch(self._listener)
            listener, self._listener = self._listener, None
            await _close(listener)
            if time.monotonic() - connected_at > self._backoff_max:
                delay = self._backoff_min
            while self._listener is None:
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self._backoff_max)
                try:
                    self._listener = await self._connect_listener()
                except Exception as exc:
                    logger.warning("bus %s: listening again failed: %s", self._sender, exc)
            logger.info("bus %s: listening again; messages meanwhile may be lost", self._sender)
            for hook in tuple(self._hooks):
                try:
                    await hook()
                except Exception:
                    logger.exception("bus %s: a reconnect hook failed", self._sender)

    async def _watch(self, conn: Any) -> None:
        """Return once ``conn`` is lost; LISTEN on channels subscribed meanwhile."""
        while not conn.is_closed():
            self._attention.clear()
            try:
                await self._listen_new(conn)
                try:
                    await asyncio.wait_for(self._attention.wait(), self._ping_seconds)
                except TimeoutError:
                    await conn.fetchval("SELECT 1", timeout=self._ping_seconds)
            except Exception as exc:
                logger.warning("bus %s: listening connection lost: %s", self._sender, exc)
                return
        logger.warning("bus %s: listening connection closed", self._sender)

    async def _keep_sending(self) -> None:
        delay = self._backoff_min
        while True:
            if not self._queue:
                self._drained.set()
                self._queued.clear()
                await self._queued.wait()
                continue
            conn = self._notifier
            if conn is None or conn.is_closed():
                self._notifier = None
                await _close(conn)
                try:
                    conn = await self._connect("send", {"synchronous_commit": "off"})
                except Exception as exc:
                    logger.warning("bus %s: connecting to send failed: %s", self._sender, exc)
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, self._backoff_max)
                    continue
                self._notifier = conn
                delay = self._backoff_min
            if self._dropped:
                logger.warning("bus %s: %d queued messages dropped", self._sender, self._dropped)
                self._dropped = 0
            if self._lost_unannounced:
                self._announce_loss()
            count = min(len(self._queue), self._max_batch)
            batch = [self._queue.popleft() for _ in range(count)]
            lost = True
            try:
                await _notify(conn, batch, self._connect_timeout)
                lost = False
            except Exception as exc:
                logger.warning("bus %s: %d messages lost: %s", self._sender, count, exc)
                self._notifier = None
                await _close(conn)
            finally:
                self._finished(count, lost=lost)


async def _notify(conn: Any, batch: list[tuple[str, str]], seconds: float) -> None:
    """Send ``batch`` in one statement: one transaction, NOTIFYs delivered in order."""
    if len(batch) == 1:
        await conn.execute("SELECT pg_notify($1, $2)", *batch[0], timeout=seconds)
        return
    await conn.execute(
        "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS m(c, p)",
        [channel for channel, _ in batch],
        [payload for _, payload in batch],
        timeout=seconds,
    )


async def _close(conn: Any) -> None:
    if conn is None or conn.is_closed():
        return
    try:
        await conn.close(timeout=1.0)
    except Exception:
        conn.terminate()
