"""The HTTP connections: time limits for reading a request, and quiet logs for clients'
own faults.

aiohttp bounds only a kept-alive connection's idle time between requests: a client may
take as long as it likes over a request's head or body, holding a connection (and a file
descriptor) all along, a "slowloris". ``HttpRunner`` serves the app over connections that
bound both, from ``[http]`` in the config:

- the head (request line and headers) must be complete ``request_header_timeout`` seconds
  after the connection opened, or after the first byte of a later request on it;
- a body may go ``request_body_timeout`` seconds without a byte arriving, and once that
  grace period is over must average ``request_body_min_rate`` bytes per second: N bytes may
  take ``request_body_timeout + N / request_body_min_rate`` seconds. A large upload at any
  usable speed passes; a trickle does not, and holding a connection costs a client that
  rate in bandwidth. However fast a body started, stalling for ``request_body_timeout``
  ends it. Time the server itself holds reading back (its buffer for a handler that has
  not caught up is full) does not count against the client.

A connection over a limit is closed; a handler reading its body sees the client go away
(``ConnectionResetError``), as for a client that hangs up. Only reading a request is
bounded: a handler may take as long as it needs to answer (a long-polling /sync), and a
connection idle between requests is left to aiohttp's keep-alive timeout.

A long-poll (``Notifier.wait_for_user`` within ``abandoned_when``) ends the moment its
connection is lost: the connection is current (``serve_on``) for the requests it serves,
holds the futures of their waiting polls and resolves them in ``connection_lost``. aiohttp
itself tells a handler nothing when a bodiless request's client goes away.

Malformed HTTP, which aiohttp answers with 400 and logs as an error with a traceback, is
logged at debug level without one: it is the client's fault, and anyone can send it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.http import HttpProcessingError
from aiohttp.streams import StreamReader

from peyvand.config.model import HttpConfig
from peyvand.services.sync.notifier import serve_on

logger = logging.getLogger(__name__)


class HttpRunner(web.AppRunner):
    """``web.AppRunner`` whose connections enforce the request read ``limits``."""

    __slots__ = ("_limits",)

    def __init__(self, app: web.Application, *, limits: HttpConfig, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._limits = limits

    async def _make_server(self) -> web.Server:
        return _Server(await super()._make_server(), self._limits)


class _Server(web.Server):
    """The ``web.Server`` aiohttp made for the app, serving ``_Connection`` protocols."""

    def __init__(self, server: web.Server, limits: HttpConfig) -> None:
        super().__init__(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            **server._kwargs,  # the protocol options aiohttp gathered (handler_args, ...)
        )
        self._limits = limits

    def __call__(self) -> web.RequestHandler:
        kwargs = self._kwargs | {"keepalive_timeout": self._limits.keepalive_timeout}
        return _Connection(self, loop=self._loop, limits=self._limits, **kwargs)


class _Connection(web.RequestHandler):
    """One HTTP connection, closed when a request's head or body is too slow to arrive.

    At most one of the two is being waited for: the head from its first byte (or the
    connection's opening) until the parser completes it, then its body, if any, until the
    body is complete. One timer checks the deadline; data only moves the deadline, and the
    timer re-arms itself when it fires early.
    """

    __slots__ = (
        "_body",
        "_body_bytes",
        "_body_last",
        "_body_since",
        "_head_since",
        "_limits",
        "_polls",
        "_timer",
    )

    def __init__(self, manager: web.Server, *, limits: HttpConfig, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._timer: asyncio.TimerHandle | None = None
        self._head_since: float | None = None  # when the head being waited for began
        self._body: StreamReader | None = None  # the body being waited for
        self._body_since = 0.0  # when its head was complete
        self._body_last = 0.0  # when data last arrived for it
        self._body_bytes = 0  # bytes received for it so far
        # The futures of its requests' waiting long-polls, resolved when it is lost.
        self._polls: list[asyncio.Future[bool]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_since = self._loop.time()
        self._schedule()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)
        polls, self._polls = self._polls, None
        for future in polls or ():
            if not future.done():
                future.set_result(True)

    async def start(self) -> None:
        """Serve the connection's requests (aiohttp's task for it), its long-polls
        bound to it."""
        serve_on(self)
        await super().start()

    def watch(self, future: asyncio.Future[bool]) -> bool:
        """Resolve ``future`` with True when the connection is lost; False, holding
        nothing, when it is closed or closing already (``ClientConnection``)."""
        if self.transport is None or self.transport.is_closing():
            return False
        if self._polls is None:
            self._polls = []
        self._polls.append(future)
        return True

    def unwatch(self, future: asyncio.Future[bool]) -> None:
        """Forget ``future`` (its poll is over), if still held."""
        polls = self._polls
        if polls is not None and future in polls:
            polls.remove(future)
            if not polls:
                self._polls = None

    def data_received(self, data: bytes) -> None:
        now = self._loop.time()
        # Bytes after a complete request (and its body) start the next head. After an
        # Upgrade request aiohttp only buffers them until the upgrade is declined.
        if data and self._head_since is None and self._body is None and not self._upgraded:
            self._head_since = now
        queued = len(self._messages)
        super().data_received(data)
        if len(self._messages) > queued:  # a head completed (or refused as malformed)
            self._head_since = None
            body = self._messages[-1][1]
            self._body = None if body.is_eof() else body
            self._body_since = self._body_last = now
            self._body_bytes = 0
            self._drop_keepalive_timer()
        elif self._body is not None and data:
            self._body_last = now
            self._body_bytes += len(data)
        if self._body is not None and self._body.is_eof():
            self._body = None
        self._schedule()

    def _drop_keepalive_timer(self) -> None:
        """Cancel aiohttp's idle timer, armed when the connection opened, once a request
        has come: it closes only an idle connection and does nothing while a handler runs,
        and aiohttp arms it again after the response. A long-poll then holds no timer."""
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's error log, but a malformed request (answered 400) at debug level."""
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            logger.debug("malformed request from %s: %r", self._peer(), exc.message)
            return
        super().log_exception(*args, **kw)

    def _deadline(self) -> float | None:
        """When the head or body being waited for is late; None when none is."""
        limits = self._limits
        if self._head_since is not None:
            return self._head_since + limits.request_header_timeout
        if self._body is None:
            return None
        deadline = self._body_last + limits.request_body_timeout
        if limits.request_body_min_rate:
            credit = self._body_bytes / limits.request_body_min_rate
            deadline = min(deadline, self._body_since + limits.request_body_timeout + credit)
        return deadline

    def _schedule(self) -> None:
        """Have the timer fire by the deadline (a later one just re-arms it); with nothing
        being waited for, drop it, so a connection waiting on its handler (a long-polling
        /sync) holds no timer (issue 15, "Memory")."""
        deadline = self._deadline()
        if deadline is None or self.transport is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if self._timer is not None:
            if self._timer.when() <= deadline:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._body is not None and self._body.is_eof():
            self._body = None
        now = self._loop.time()
        if self._reading_paused or self._buffer_paused:
            # The server holds reading back: the client is not late, its clock restarts.
            if self._head_since is not None:
                self._head_since = now
            self._body_since = self._body_last = now
            self._body_bytes = 0
        deadline = self._deadline()
        if deadline is None:
            return
        if now < deadline:
            self._schedule()
            return
        part = "head" if self._head_since is not None else "body"
        logger.debug("closing the connection from %s: request %s too slow", self._peer(), part)
        self.force_close()

    def _peer(self) -> str:
        peer = self.peername
        return str(peer[0]) if isinstance(peer, tuple) else "unknown"
