"""The receiving application service of ``bench.appservice``, in a process of its own.

``python -m bench.appservice_receiver --port P --hs-token T`` serves, on 127.0.0.1, the
receiving side of the Application Service API's transactions (``PUT
/_matrix/app/v1/transactions/{txnId}``, the ``hs_token`` checked as the spec's
"Authorization" section asks), answers ``{}`` at once and notes, for each transaction,
when it arrived and how many events it carried, and for each of the bench's messages (a
body starting with ``MARKER``) its event ID, when it arrived and in which transaction.
A transaction ID seen before is answered and counted as a repeat, not recorded again.

It runs apart from the bench's senders so that their event loop, busy sending 1,000
messages a second, does not delay the moment an arrival is noted. Arrivals are
``time.monotonic()`` values: CLOCK_MONOTONIC, one clock for every process on the machine,
so the bench compares them with its own send times. The bench reads what was recorded
from ``GET /bench/received`` (how many marked messages so far, and this process's CPU
seconds) and ``GET /bench/records``
(everything). The process ends after ``--max-seconds`` whatever happens, so it never
outlives a bench that died.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MARKER = "appservice-bench"
TRANSACTIONS_PATH = "/_matrix/app/v1/transactions/{txn_id}"
RECEIVED_PATH = "/bench/received"
RECORDS_PATH = "/bench/records"
DEFAULT_MAX_SECONDS = 900.0


@dataclass(slots=True)
class Records:
    """What arrived: ``transactions`` as ``[arrival, event count]``, ``arrivals`` of the
    marked messages by event ID as ``[arrival, index into transactions]``."""

    transactions: list[list[float]] = field(default_factory=list)
    arrivals: dict[str, list[float]] = field(default_factory=dict)
    repeats: int = 0
    _seen: set[str] = field(default_factory=set)

    def add(self, txn_id: str, arrival: float, body: Any) -> None:
        if txn_id in self._seen:
            self.repeats += 1
            return
        self._seen.add(txn_id)
        events = body.get("events", []) if isinstance(body, dict) else []
        if not isinstance(events, list):
            events = []
        position = len(self.transactions)
        self.transactions.append([arrival, len(events)])
        for event in events:
            event_id = event.get("event_id") if isinstance(event, dict) else None
            content = event.get("content") if isinstance(event, dict) else None
            text = content.get("body") if isinstance(content, dict) else None
            if isinstance(event_id, str) and isinstance(text, str) and text.startswith(MARKER):
                self.arrivals.setdefault(event_id, [arrival, position])

    def to_json(self) -> dict[str, Any]:
        return {
            "transactions": self.transactions,
            "arrivals": self.arrivals,
            "repeats": self.repeats,
        }


def build_app(hs_token: str, records: Records) -> web.Application:
    """The appservice's routes and the bench's two read-outs."""
    expected = f"Bearer {hs_token}"

    async def transaction(request: web.Request) -> web.Response:
        arrival = time.monotonic()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"errcode": "M_FORBIDDEN", "error": "bad token"}, status=403)
        records.add(request.match_info["txn_id"], arrival, await request.json())
        return web.json_response({})

    async def received(_: web.Request) -> web.Response:
        return web.json_response(
            {"received": len(records.arrivals), "cpu_seconds": time.process_time()}
        )

    async def everything(_: web.Request) -> web.Response:
        return web.json_response(records.to_json())

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_put(TRANSACTIONS_PATH, transaction)
    app.router.add_get(RECEIVED_PATH, received)
    app.router.add_get(RECORDS_PATH, everything)
    return app


async def serve(port: int, hs_token: str, max_seconds: float) -> None:
    """Serve on 127.0.0.1:``port`` for ``max_seconds`` (or until the process is stopped)."""
    runner = web.AppRunner(build_app(hs_token, Records()), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.sleep(max_seconds)
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.appservice_receiver")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hs-token", required=True)
    parser.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS)
    args = parser.parse_args(argv)
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.port, args.hs_token, args.max_seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
