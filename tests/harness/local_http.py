"""Small aiohttp servers of the tests (push gateways, a push service) on loopback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def start_post_site(host: str, port: int, path: str, handler: Handler) -> web.AppRunner:
    """A started site on ``host:port`` whose one route is ``POST path``; stop it with
    ``cleanup()`` on the runner returned."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
