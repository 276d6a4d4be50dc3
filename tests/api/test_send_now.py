"""``send_now``: a long-poll's answer written by its handler, before the handler's own
clean-up and the middlewares'. It carries the CORS headers every answer has, and an
error raised after it never writes a second answer on the connection.

A small app with the server's own errors middleware, and the two long-polls of a real
server (``/sync``, sliding sync).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from harness.client import MatrixClient
from harness.local_http import served
from harness.server import HomeserverProcess
from peyvand.api.context import json_response, send_now
from peyvand.api.server import _errors_middleware
from peyvand.errors import Errcode, MatrixError

SLIDING_SYNC = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
TIMEOUT = aiohttp.ClientTimeout(total=10)
QUIET_SECONDS = 0.5
WAIT_SECONDS = 5.0
MAX_READS = 20


async def _sent_then_raises(request: web.Request) -> web.StreamResponse:
    await send_now(request, json_response({"answer": request.match_info["kind"]}))
    if request.match_info["kind"] == "matrix":
        raise MatrixError(Errcode.FORBIDDEN, "after the answer")
    raise RuntimeError("after the answer")


async def _plain(_: web.Request) -> web.StreamResponse:
    return json_response({"answer": "plain"})


async def _after_the_client_left(request: web.Request) -> web.StreamResponse:
    """Answers once its client has closed the connection (at most ``WAIT_SECONDS``)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            break
        await asyncio.sleep(0.01)
    return await send_now(request, json_response({"answer": "too late"}))


# What each request to the app ended with: ("answered", status) or ("raised", type name),
# and an event set at each.
_OUTCOMES = web.AppKey("outcomes", list[tuple[str, object]])
_ENDED = web.AppKey("ended", asyncio.Event)


@web.middleware
async def _outcome(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except Exception as exc:
        request.app[_OUTCOMES].append(("raised", type(exc).__name__))
        raise
    finally:
        request.app[_ENDED].set()
    request.app[_OUTCOMES].append(("answered", response.status))
    return response


@pytest.fixture
async def app() -> AsyncIterator[tuple[str, web.Application]]:
    """The app, serving, and its URL."""
    app = web.Application(middlewares=[_errors_middleware, _outcome])
    app[_OUTCOMES] = []
    app[_ENDED] = asyncio.Event()
    app.router.add_get("/sent/{kind}", _sent_then_raises)
    app.router.add_get("/plain", _plain)
    app.router.add_get("/late", _after_the_client_left)
    async with served(app) as url:
        yield url, app


async def test_an_error_after_the_answer_writes_nothing_more_on_the_connection(
    app: tuple[str, web.Application],
) -> None:
    host, port = app[0].removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        for kind in ("unexpected", "matrix"):
            writer.write(f"GET /sent/{kind} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await writer.drain()
            # All the connection carries until it stays quiet: one answer, no error
            # answer after it.
            received = await _until_quiet(reader)
            head, _, body = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert received.count(b"HTTP/1.1") == 1
            assert json.loads(body) == {"answer": kind}
            assert b"Access-Control-Allow-Origin: *" in head.split(b"\r\n")
        # The connection still serves the next request.
        writer.write(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        received = await _until_quiet(reader)
        assert received.startswith(b"HTTP/1.1 200 OK\r\n")
        assert received.endswith(b'{"answer":"plain"}')
    finally:
        writer.close()


async def test_an_answer_to_a_client_gone_is_no_error(
    app: tuple[str, web.Application],
) -> None:
    host, port = app[0].removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    await asyncio.wait_for(app[1][_ENDED].wait(), WAIT_SECONDS)
    # Answered as any long-poll whose client left while it was written: not an error
    # of the server's (a 500 in its metrics), nor an exception its handlers see.
    assert app[1][_OUTCOMES] == [("answered", 200)]


async def _until_quiet(reader: asyncio.StreamReader) -> bytes:
    """What ``reader`` receives until nothing more comes for ``QUIET_SECONDS`` (at most
    ``MAX_READS`` reads)."""
    received = b""
    for _ in range(MAX_READS):
        try:
            chunk = await asyncio.wait_for(reader.read(65536), QUIET_SECONDS)
        except TimeoutError:
            break
        if not chunk:
            break
        received += chunk
    return received


async def test_the_long_polls_answers_carry_the_cors_headers(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    alice = await client.register()
    headers = {"Authorization": f"Bearer {alice.access_token}"}
    base = homeserver.base_url.rstrip("/")
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        async with session.get(f"{base}/_matrix/client/v3/sync", headers=headers) as reply:
            assert reply.status == 200
            assert "next_batch" in await reply.json()
            assert reply.headers["Access-Control-Allow-Origin"] == "*"
        async with session.post(
            f"{base}{SLIDING_SYNC}", json={"lists": {}}, headers=headers
        ) as reply:
            assert reply.status == 200
            assert "pos" in await reply.json()
            assert reply.headers["Access-Control-Allow-Origin"] == "*"
