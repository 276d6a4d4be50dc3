"""Clients that misbehave at the HTTP level: ones that go away mid-body, send malformed
requests, or trickle a request's head or body to hold a connection open (slowloris).

Their faults are logged at debug level without a traceback (the servers here log at INFO,
so their logs show none of it), and the ``[http]`` read limits close a connection whose
request head or body is too slow, without touching a long-polling /sync or an idle
keep-alive connection."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from harness.client import MatrixClient, new_session
from harness.server import HomeserverProcess, start_homeserver

# The strict server's limits, in seconds.
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
KEEPALIVE_TIMEOUT = 6.0
# How much later than its limit a slow connection may be closed (timer and scheduling).
MARGIN = 3.0
# One byte is trickled this often: well inside either limit, so only a total limit helps.
TRICKLE_INTERVAL = 0.5
LOGIN = "/_matrix/client/v3/login"


@pytest.fixture(scope="module")
def plain_server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeserverProcess]:
    """A server with the default configuration, for this module alone (its log is read)."""
    server = start_homeserver(backend, request, tmp_path_factory.mktemp("plain"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def strict_server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeserverProcess]:
    """A server whose request head and body limits are two seconds, and whose kept-alive
    connections may idle for KEEPALIVE_TIMEOUT seconds."""
    options = {
        "http.request_header_timeout": str(HEADER_TIMEOUT),
        "http.request_body_timeout": str(BODY_TIMEOUT),
        "http.request_body_min_rate": "1024",
        "http.keepalive_timeout": str(KEEPALIVE_TIMEOUT),
    }
    server = start_homeserver(backend, request, tmp_path_factory.mktemp("strict"), options=options)
    try:
        yield server
    finally:
        server.stop()


def assert_quiet_log(server: HomeserverProcess) -> None:
    """Nothing a client did shows up as an error in the server's log."""
    log = server.log()
    for marker in ("Traceback", "Unhandled error", " ERROR ", "Error handling request"):
        assert marker not in log, f"{marker!r} in the server log:\n{log}"


async def assert_serves(server: HomeserverProcess) -> None:
    async with new_session() as session:
        versions = await MatrixClient(session, server.base_url).request(
            "GET", "/_matrix/client/versions"
        )
        versions.ok()


async def closed_within(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trickle: bytes, limit: float
) -> float:
    """Trickle ``trickle`` one byte every TRICKLE_INTERVAL until the server closes the
    connection; the seconds that took (``limit`` at most, then the test fails)."""
    start = time.monotonic()
    for index in range(int(limit / TRICKLE_INTERVAL) + 1):
        try:
            writer.write(trickle[index % len(trickle) : index % len(trickle) + 1])
            await writer.drain()
            data = await asyncio.wait_for(reader.read(1024), TRICKLE_INTERVAL)
        except TimeoutError:
            continue  # still open: trickle on
        except ConnectionError:
            return time.monotonic() - start
        if not data:
            return time.monotonic() - start
        pytest.fail(f"the server answered a request it has not received: {data!r}")
    pytest.fail(f"the connection was still open after {limit} s")


async def open_raw(server: HomeserverProcess) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def read_status(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(10):
        return await reader.readline()


# -- clients that go away or send garbage ------------------------------------------------


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
async def test_a_client_gone_mid_body_is_no_error(
    plain_server: HomeserverProcess, reset: bool
) -> None:
    """Content-Length 1000, ten bytes, then the client closes (or resets) the connection:
    the handler reading the body learns the client went away, which is no server error."""
    _, writer = await open_raw(plain_server)
    try:
        writer.write(
            f"POST {LOGIN} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n".encode()
            + b'{"type": "'
        )
        await writer.drain()
        await asyncio.sleep(0.3)  # the handler is waiting for the rest of the body
        if reset:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        writer.close()
    await asyncio.sleep(0.5)
    await assert_serves(plain_server)
    assert_quiet_log(plain_server)


@pytest.mark.parametrize(
    "segments",
    [
        [b"GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n"],
        [b"GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\nContent-Length: x\r\n\r\n"],
        [b"GET /_matrix/client/versions HTTP/1.1 and more\r\nHost: localhost\r\n\r\n"],
        # Garbage as the second request of a kept-alive connection.
        [
            b"GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\n\r\n",
            b"\x16\x03\x01junk\r\n\r\n",
        ],
    ],
    ids=["header-without-colon", "bad-content-length", "bad-request-line", "garbage-after-request"],
)
async def test_malformed_http_is_answered_400_and_logged_quietly(
    plain_server: HomeserverProcess, segments: list[bytes]
) -> None:
    reader, writer = await open_raw(plain_server)
    try:
        for segment in segments:
            writer.write(segment)
            await writer.drain()
            await asyncio.sleep(0.3)  # each segment arrives on its own
        async with asyncio.timeout(10):
            answer = await reader.read()  # the server closes the connection after the 400
    finally:
        writer.close()
    statuses = re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer)
    assert len(statuses) == len(segments) and statuses[-1] == b"400", answer
    await assert_serves(plain_server)
    assert_quiet_log(plain_server)


# -- slow clients ---------------------------------------------------------------------------


async def test_a_slow_request_head_is_cut_off(strict_server: HomeserverProcess) -> None:
    """A slowloris: a request line, then a header byte now and then, never the blank line."""
    reader, writer = await open_raw(strict_server)
    try:
        writer.write(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\n")
        await writer.drain()
        took = await closed_within(reader, writer, b"X-Slow: 1\r\n", HEADER_TIMEOUT + MARGIN)
    finally:
        writer.close()
    assert took >= HEADER_TIMEOUT - 1.0
    await assert_serves(strict_server)
    assert_quiet_log(strict_server)


async def test_a_connection_that_sends_nothing_is_closed(
    strict_server: HomeserverProcess,
) -> None:
    """A new connection must bring its first request head within the header limit."""
    reader, writer = await open_raw(strict_server)
    try:
        start = time.monotonic()
        async with asyncio.timeout(HEADER_TIMEOUT + MARGIN):
            assert await reader.read() == b""
    finally:
        writer.close()
    assert time.monotonic() - start >= HEADER_TIMEOUT - 1.0


async def test_a_slow_request_body_is_cut_off(strict_server: HomeserverProcess) -> None:
    """A complete head announcing 1000 bytes, then a byte now and then: the login handler
    reading the body sees the connection closed, which is not an error."""
    reader, writer = await open_raw(strict_server)
    try:
        writer.write(
            f"POST {LOGIN} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n".encode()
        )
        await writer.drain()
        took = await closed_within(reader, writer, b" ", BODY_TIMEOUT + MARGIN)
    finally:
        writer.close()
    assert took >= BODY_TIMEOUT - 1.0
    await assert_serves(strict_server)
    assert_quiet_log(strict_server)


async def test_a_steady_upload_may_take_longer_than_the_body_limit(
    strict_server: HomeserverProcess,
) -> None:
    """Well above the minimum rate, a body may take much longer than request_body_timeout."""
    async with new_session() as session:
        account = await MatrixClient(session, strict_server.base_url).register()
        chunk, count = b"m" * 8192, 16  # 128 KiB over four seconds: 32 KiB/s

        async def body() -> AsyncIterator[bytes]:
            for _ in range(count):
                yield chunk
                await asyncio.sleep(4.0 / count)

        start = time.monotonic()
        async with session.post(
            f"{strict_server.base_url}/_matrix/media/v3/upload",
            data=body(),
            headers={
                "Authorization": f"Bearer {account.access_token}",
                "Content-Type": "application/octet-stream",
                "Content-Length": str(len(chunk) * count),
            },
        ) as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["content_uri"].startswith("mxc://")
        assert time.monotonic() - start > BODY_TIMEOUT + 1.0
    assert_quiet_log(strict_server)


async def test_a_long_poll_and_an_idle_keep_alive_outlast_the_limits(
    strict_server: HomeserverProcess,
) -> None:
    """Only reading a request is bounded: a /sync answered after four seconds arrives, and a
    kept-alive connection idle for longer than the head limit still takes a request."""
    async with new_session() as session:
        client = MatrixClient(session, strict_server.base_url)
        account = await client.register()
        since = (await client.request("GET", "sync", token=account)).ok()["next_batch"]
        start = time.monotonic()
        synced = await client.request(
            "GET", "sync", token=account, params={"since": since, "timeout": "4000"}
        )
        synced.ok()
        assert time.monotonic() - start >= 3.5

    reader, writer = await open_raw(strict_server)
    request = b"GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\n\r\n"
    try:
        for _ in range(2):
            writer.write(request)
            await writer.drain()
            assert (await read_status(reader)).startswith(b"HTTP/1.1 200")
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
            await asyncio.sleep(HEADER_TIMEOUT + 1.5)  # idle, kept alive
    finally:
        writer.close()


async def test_an_idle_keep_alive_connection_is_closed(strict_server: HomeserverProcess) -> None:
    """A connection idle after its request is closed once the keep-alive timeout is over,
    so idle connections cannot pile up (aiohttp alone keeps them about an hour)."""
    reader, writer = await open_raw(strict_server)
    try:
        writer.write(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await writer.drain()
        assert (await read_status(reader)).startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        async with asyncio.timeout(KEEPALIVE_TIMEOUT + 5):
            while await reader.read(4096):
                pass  # the rest of the response, then the close
        assert time.monotonic() - start >= KEEPALIVE_TIMEOUT - 1
    finally:
        writer.close()
    assert_quiet_log(strict_server)
