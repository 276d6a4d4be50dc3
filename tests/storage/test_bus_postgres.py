"""The bus between processes over PostgreSQL LISTEN/NOTIFY (``storage.bus.PostgresBus``,
issue 21): two buses on one database stand for two processes of a deployment."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from harness.postgres import PostgresCluster
from peyvand.storage import bus as bus_module
from peyvand.storage.bus import MAX_PAYLOAD_BYTES, PayloadTooLarge, PostgresBus

pytestmark = pytest.mark.postgres


def _bus(dsn: str, name: str) -> PostgresBus:
    """A bus that reconnects and pings sooner than the defaults, for quick tests."""
    return PostgresBus(dsn, name, backoff_seconds=(0.05, 0.5), ping_seconds=1.0)


@pytest.fixture
async def dsn(postgres_cluster: PostgresCluster) -> str:
    return postgres_cluster.create_database("bus")


@pytest.fixture
async def admin(dsn: str) -> AsyncIterator[Any]:
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait until ``condition()`` holds, polled every 10 ms; fail after ``seconds``."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {seconds} s")


async def _terminate(admin: Any, application_name: str) -> None:
    """Kill the backend of one of a bus's connections, as a server restart would."""
    pids = await admin.fetch(
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = $1",
        application_name,
    )
    assert len(pids) == 1
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pids[0]["pid"])


async def test_two_processes_exchange_messages_in_order(dsn: str) -> None:
    a = _bus(dsn, "a")
    b = _bus(dsn, "b")
    at_a: list[tuple[int, str]] = []
    at_b: list[tuple[int, str]] = []
    a.subscribe("positions", lambda payload, sender: at_a.append((payload["p"], sender)))
    b.subscribe("positions", lambda payload, sender: at_b.append((payload["p"], sender)))
    await a.start()
    await b.start()
    try:
        # Published in one go, so sent in batches of several per round trip.
        for position in range(300):
            a.publish("positions", {"s": "events", "p": position})
        await _until(lambda: len(at_b) == 300)
        assert at_b == [(position, "a") for position in range(300)]
        b.publish("positions", {"s": "events", "p": 1000})
        await _until(lambda: (1000, "b") in at_a)
        # a's own messages reached its subscriber once, directly: NOTIFY delivers in commit
        # order, so their echo came to a's connection before b's reply and was skipped.
        assert at_a == [(position, "a") for position in range(300)] + [(1000, "b")]
        assert at_b[-1] == (1000, "b")
    finally:
        await a.stop()
        await b.stop()


async def test_payload_limit_and_subscribing_after_start(dsn: str) -> None:
    a = _bus(dsn, "a")
    b = _bus(dsn, "b")
    await a.start()
    await b.start()
    got: list[dict[str, Any]] = []
    try:
        b.subscribe("big", lambda payload, _sender: got.append(payload))
        # b LISTENs on the new channel soon after: probe until a message gets through.
        for probe in range(100):
            a.publish("big", {"probe": probe})
            await asyncio.sleep(0.05)
            if got:
                break
        await asyncio.sleep(0.1)
        assert got
        got.clear()
        largest = {"x": "a" * (MAX_PAYLOAD_BYTES - 8)}  # {"x":"…"}: 7,900 bytes
        with pytest.raises(PayloadTooLarge, match="7901 bytes"):
            a.publish("big", {"x": "a" * (MAX_PAYLOAD_BYTES - 7)})
        with pytest.raises(ValueError, match="not a lower-case identifier"):
            a.publish('big"; DROP', {})
        a.publish("big", largest)
        await _until(lambda: len(got) == 1)
        assert got == [largest]
    finally:
        await a.stop()
        await b.stop()


async def test_listener_reconnects_and_runs_its_hooks(dsn: str, admin: Any) -> None:
    a = _bus(dsn, "a")
    b = _bus(dsn, "b")
    got: list[int] = []
    reconnects: list[float] = []

    async def reread_positions() -> None:
        reconnects.append(time.monotonic())

    b.subscribe("positions", lambda payload, _sender: got.append(payload["p"]))
    b.on_reconnect(reread_positions)
    await a.start()
    await b.start()
    try:
        a.publish("positions", {"p": 1})
        await _until(lambda: got == [1])
        await _terminate(admin, "peyvand bus listen b")
        await _until(lambda: len(reconnects) == 1)
        a.publish("positions", {"p": 2})
        await _until(lambda: got == [1, 2])
        # The sending side reconnects too: the first message after its loss goes out.
        await _terminate(admin, "peyvand bus send a")
        await _until(lambda: not a.connected)
        a.publish("positions", {"p": 3})
        await _until(lambda: got == [1, 2, 3])
        assert len(reconnects) == 1
    finally:
        await a.stop()
        await b.stop()


async def test_foreign_notifications_and_pings_leave_the_bus_listening(
    dsn: str, admin: Any
) -> None:
    a = _bus(dsn, "a")
    b = PostgresBus(dsn, "b", ping_seconds=0.05)
    got: list[Any] = []
    reconnects: list[int] = []

    async def reread_positions() -> None:
        reconnects.append(1)

    b.subscribe("positions", lambda payload, sender: got.append((payload, sender)))
    b.on_reconnect(reread_positions)
    await a.start()
    await b.start()
    try:
        for garbage in ("not json", "[1, 2]", '["x", [1]]', '{"p": 1}'):
            await admin.execute("SELECT pg_notify('positions', $1)", garbage)
        await asyncio.sleep(0.3)  # several pings
        a.publish("positions", {"p": 2})
        await _until(lambda: len(got) == 1)
        assert got == [({"p": 2}, "a")]
        assert reconnects == []
    finally:
        await a.stop()
        await b.stop()


async def test_stop_is_clean(dsn: str, admin: Any) -> None:
    before = asyncio.all_tasks()
    a = _bus(dsn, "a")
    b = _bus(dsn, "b")
    at_a: list[int] = []
    at_b: list[int] = []
    a.subscribe("positions", lambda payload, _sender: at_a.append(payload["p"]))
    b.subscribe("positions", lambda payload, _sender: at_b.append(payload["p"]))
    await a.start()
    await b.start()
    assert a.connected
    active = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name LIKE 'peyvand bus %'"
    )
    assert await admin.fetchval(active) == 4
    for position in range(20):
        a.publish("positions", {"p": position})
    await a.stop()  # sends what is queued first
    assert not a.connected
    await _until(lambda: len(at_b) == 20)
    assert at_b == at_a == list(range(20))
    await b.stop()
    assert asyncio.all_tasks() == before
    await _until_async(lambda: admin.fetchval(active), 0)
    with pytest.raises(RuntimeError):
        a.publish("positions", {"p": 21})


async def _until_async(read: Callable[[], Any], expected: object, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if await read() == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not {expected!r} within {seconds} s")


async def test_sent_waits_for_the_messages_published_before(dsn: str) -> None:
    """``sent`` returns once what was published is in PostgreSQL's hands (True), or
    False after its time when it cannot be sent (here: the bus is not running yet)."""
    a = _bus(dsn, "a")
    b = _bus(dsn, "b")
    at_b: list[int] = []
    b.subscribe("caches", lambda payload, _sender: at_b.append(payload["n"]))
    assert await a.sent(0.1)  # nothing published
    a.publish("caches", {"n": 0})
    started = time.monotonic()
    assert not await a.sent(0.1)
    assert time.monotonic() - started >= 0.1
    await b.start()
    await a.start()
    try:
        for n in range(1, 250):
            a.publish("caches", {"n": n})
        assert await a.sent(5.0)
        await _until(lambda: len(at_b) == 250)
        assert at_b == list(range(250))
    finally:
        await a.stop()
        await b.stop()


async def test_a_lost_batch_is_not_sent_and_announced_once_sending_again(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose NOTIFY fails is lost: ``sent`` answers False for it (not True as if
    it had gone out), and the ``on_send_lost`` hooks run once a connection to send on is
    open again (what they publish is queued behind what waits already)."""
    a = _bus(dsn, "a")
    b = _bus(dsn, "b")
    at_b: list[int] = []
    b.subscribe("caches", lambda payload, _sender: at_b.append(payload["n"]))
    a.on_send_lost(lambda: a.publish("caches", {"n": -1}))
    await b.start()
    await a.start()
    real_notify = bus_module._notify
    failures = [RuntimeError("connection reset")]

    async def failing_once(conn: Any, batch: list[tuple[str, str]], seconds: float) -> None:
        if failures:
            raise failures.pop()
        await real_notify(conn, batch, seconds)

    monkeypatch.setattr(bus_module, "_notify", failing_once)
    try:
        a.publish("caches", {"n": 0})
        assert not await a.sent(5.0)
        a.publish("caches", {"n": 1})
        assert await a.sent(5.0)
        await _until(lambda: len(at_b) == 2)
        assert at_b == [1, -1]
    finally:
        await a.stop()
        await b.stop()


async def test_messages_dropped_from_a_full_queue_are_lost(dsn: str) -> None:
    """Past ``max_queued`` the oldest queued message is dropped: a loss, not a send."""
    a = PostgresBus(dsn, "a", max_queued=2, backoff_seconds=(0.05, 0.5), ping_seconds=1.0)
    b = _bus(dsn, "b")
    at_b: list[int] = []
    b.subscribe("caches", lambda payload, _sender: at_b.append(payload["n"]))
    lost: list[bool] = []
    a.on_send_lost(lambda: lost.append(True))
    await b.start()
    for n in range(2):  # not started: queued
        a.publish("caches", {"n": n})
    waiting = asyncio.ensure_future(a.sent(5.0))
    await asyncio.sleep(0)
    a.publish("caches", {"n": 2})  # the first is dropped
    assert not await waiting
    await a.start()
    try:
        await _until(lambda: len(at_b) == 2)
        assert at_b == [1, 2]
        assert lost == [True]
        a.publish("caches", {"n": 3})
        assert await a.sent(5.0)
        assert lost == [True]
    finally:
        await a.stop()
        await b.stop()


async def test_channels_subscribed_before_start_are_listened_on_when_it_returns(
    dsn: str, admin: Any
) -> None:
    """A NOTIFY sent the moment ``start`` returns reaches a channel subscribed before
    (the StreamRelay and CacheRelay subscribe when built for this: nothing written after
    the services read their positions is missed)."""
    b = _bus(dsn, "b")
    got: list[int] = []
    b.subscribe("streams", lambda payload, _sender: got.append(payload["p"]))
    await b.start()
    try:
        await admin.execute("SELECT pg_notify('streams', '[\"other\",{\"p\":7}]')")
        await _until(lambda: got == [7], seconds=2.0)
    finally:
        await b.stop()
