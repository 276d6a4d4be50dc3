"""The CacheRelay when the sending side loses messages (issue 21, "Caches"): two buses on
one PostgreSQL database stand for a writer and a reader of a deployment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from harness.postgres import PostgresCluster
from peyvand.services.sync.cache_relay import CacheRelay
from peyvand.storage import bus as bus_module
from peyvand.storage.bus import PostgresBus

pytestmark = pytest.mark.postgres


async def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {seconds} s")


@pytest.fixture
async def buses(
    postgres_cluster: PostgresCluster,
) -> AsyncIterator[tuple[PostgresBus, PostgresBus]]:
    dsn = postgres_cluster.create_database("cacheloss")
    writer = PostgresBus(dsn, "writer", backoff_seconds=(0.05, 0.5), ping_seconds=1.0)
    reader = PostgresBus(dsn, "reader", backoff_seconds=(0.05, 0.5), ping_seconds=1.0)
    yield writer, reader
    await writer.stop()
    await reader.stop()


def _fail_sends(monkeypatch: pytest.MonkeyPatch, times: int) -> None:
    real_notify = bus_module._notify
    failures = [RuntimeError("connection reset")] * times

    async def failing(conn: Any, batch: list[tuple[str, str]], seconds: float) -> None:
        if failures:
            raise failures.pop()
        await real_notify(conn, batch, seconds)

    monkeypatch.setattr(bus_module, "_notify", failing)


async def test_a_lost_invalidation_drops_every_cache_elsewhere(
    buses: tuple[PostgresBus, PostgresBus], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's token invalidation is lost on its side: once it sends again, the
    reader drops every cache (its copy of the token included), where it kept them."""
    writer_bus, reader_bus = buses
    writer = CacheRelay(writer_bus, "writer", writer_bus.sent)
    reader = CacheRelay(reader_bus, "reader", reader_bus.sent)
    dropped: list[tuple[str, list[Any] | None]] = []
    reader.register("tokens", lambda keys: dropped.append(("tokens", keys)))
    reader.register("push_rules", lambda keys: dropped.append(("push_rules", keys)))
    await writer.start()
    await reader.start()
    await writer_bus.start()
    await reader_bus.start()
    _fail_sends(monkeypatch, 1)
    writer.changed("tokens", ["@alice:example.org"])
    assert not await writer_bus.sent(5.0)
    writer.changed("push_rules", ["@bob:example.org"])
    assert await writer_bus.sent(5.0)
    await _until(lambda: len(dropped) == 3)
    assert dropped == [
        ("push_rules", ["@bob:example.org"]),
        ("tokens", None),
        ("push_rules", None),
    ]


async def test_delivered_publishes_again_after_a_loss(
    buses: tuple[PostgresBus, PostgresBus], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer_bus, reader_bus = buses
    writer = CacheRelay(writer_bus, "writer", writer_bus.sent)
    reader = CacheRelay(reader_bus, "reader", reader_bus.sent)
    dropped: list[list[Any] | None] = []
    reader.register("tokens", dropped.append)
    await writer_bus.start()
    await reader_bus.start()
    _fail_sends(monkeypatch, 2)
    assert await writer.delivered("tokens", ["@alice:example.org"], 5.0)
    await _until(lambda: ["@alice:example.org"] in dropped)


async def test_delivered_gives_up_after_its_time(
    buses: tuple[PostgresBus, PostgresBus], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer_bus, _reader_bus = buses
    writer = CacheRelay(writer_bus, "writer", writer_bus.sent)
    await writer_bus.start()
    _fail_sends(monkeypatch, 10_000)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert not await writer.delivered("tokens", ["@alice:example.org"], 0.5)
    assert 0.5 <= loop.time() - started < 3.0
