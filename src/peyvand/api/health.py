"""``GET /health``: whether this process serves (issue 21, "Operations";
docs/operator-guide.md, "Metrics and health"), for a load balancer's or an orchestrator's
checks, as Synapse's ``/health``.

200 ``OK`` once every component has started and until the process stops, and (a process
of a deployment) while its bus to the other processes is connected; 503 with the reason
otherwise. It reads no database: a check every second costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

HEALTH_PATH = "/health"


class Health:
    def __init__(self) -> None:
        self.serving = False
        # Each returns why the process cannot serve, or None.
        self.checks: list[Callable[[], str | None]] = []

    def problem(self) -> str | None:
        """Why this process is not healthy, or None."""
        if not self.serving:
            return "not serving (starting or stopping)"
        for check in self.checks:
            reason = check()
            if reason is not None:
                return reason
        return None

    async def handle(self, _request: web.Request) -> web.Response:
        problem = self.problem()
        if problem is None:
            return web.Response(text="OK", headers={"Cache-Control": "no-store"})
        return web.Response(
            status=503, text=f"Unavailable: {problem}", headers={"Cache-Control": "no-store"}
        )
