"""``api.in_flight``: a stopping server's database closes only once no request is being
handled, including one whose client left (aiohttp forgets its connection and does not
wait for it; CI saw a federation transaction fail on the closed database that way)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from peyvand.api.connections import HttpRunner
from peyvand.api.in_flight import InFlight
from peyvand.config.model import HttpConfig

WAIT_SECONDS = 5.0


@dataclass
class World:
    runner: HttpRunner
    port: int
    in_flight: InFlight
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    # What happened, in order: "handler done", "handler cancelled", "closed".
    log: list[str] = field(default_factory=list)

    async def leave_a_request_waiting(self) -> None:
        """A request to the waiting route whose client closes its connection once the
        handler has begun."""
        _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(self.entered.wait(), WAIT_SECONDS)
        writer.close()
        await writer.wait_closed()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    in_flight = InFlight()
    app = web.Application(middlewares=[in_flight.middleware])
    runner = HttpRunner(app, limits=HttpConfig(), handle_signals=False, shutdown_timeout=0.5)
    world = World(runner, 0, in_flight)

    async def wait(_: web.Request) -> web.Response:
        world.entered.set()
        try:
            await world.release.wait()
        except asyncio.CancelledError:
            world.log.append("handler cancelled")
            raise
        world.log.append("handler done")
        return web.Response(text="done")

    async def close(_: web.Application) -> None:
        await in_flight.close(finish=0.5, cancelled=WAIT_SECONDS)
        world.log.append("closed")

    app.router.add_get("/wait", wait)
    app.router.add_get("/quick", _ok)
    app.on_cleanup.append(close)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    world.port = runner.addresses[0][1]
    try:
        yield world
    finally:
        world.release.set()
        await runner.cleanup()


async def _ok(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def test_a_handler_whose_client_left_ends_before_the_close(world: World) -> None:
    await world.leave_a_request_waiting()
    assert len(world.in_flight) == 1
    asyncio.get_running_loop().call_later(0.2, world.release.set)
    await world.runner.cleanup()
    assert world.log == ["handler done", "closed"]
    assert len(world.in_flight) == 0


async def test_a_handler_that_does_not_finish_is_cancelled_before_the_close(
    world: World,
) -> None:
    await world.leave_a_request_waiting()
    started = time.monotonic()
    await world.runner.cleanup()
    # aiohttp does not wait for it (its connection is gone); the close gives it 0.5 s.
    assert 0.4 < time.monotonic() - started < WAIT_SECONDS
    assert world.log == ["handler cancelled", "closed"]
    assert len(world.in_flight) == 0


async def test_requests_after_the_close_are_refused(world: World) -> None:
    url = f"http://127.0.0.1:{world.port}/quick"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            assert (response.status, await response.text()) == (200, "ok")
        await world.in_flight.close()
        async with session.get(url) as response:
            assert response.status == 503
            assert await response.json() == {
                "errcode": "M_UNKNOWN",
                "error": "The server is stopping",
            }
    assert len(world.in_flight) == 0
