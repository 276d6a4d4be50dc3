"""``api.connections``: what a connection holds while its handler works. A long-polling
/sync waits in its handler for minutes; with 10,000 of them (issue 15, "Memory") every
object a waiting connection keeps counts, so its timers are dropped once the request is
read (the slow-client behaviour itself is tested in ``test_slow_clients.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from peyvand.api.connections import HttpRunner
from peyvand.config.model import HttpConfig

WAIT_SECONDS = 5.0


@pytest.fixture
async def waiting_server() -> AsyncIterator[tuple[HttpRunner, int, asyncio.Event]]:
    """A server whose one route waits until released; yields it, its port and the event
    set once a request is inside the handler."""
    entered = asyncio.Event()
    release = asyncio.Event()

    async def wait(request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/wait", wait)
    runner = HttpRunner(app, limits=HttpConfig(), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield runner, port, entered
    finally:
        release.set()
        await runner.cleanup()


async def test_a_connection_waiting_on_its_handler_holds_no_timer(
    waiting_server: tuple[HttpRunner, int, asyncio.Event],
) -> None:
    runner, port, entered = waiting_server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert runner.server is not None
        writer.write(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(entered.wait(), WAIT_SECONDS)
        (connection,) = runner.server.connections
        # The head's deadline timer and aiohttp's idle timer were armed when the connection
        # opened; both are gone.
        assert connection._timer is None  # type: ignore[attr-defined]
        assert connection._keepalive_handle is None
        assert not reader.at_eof()  # the connection is still open, the handler waiting
    finally:
        writer.close()
        await writer.wait_closed()
