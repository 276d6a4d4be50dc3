"""``python -m bench.presence [--members N] [--budget S]``: what one presence change
costs in a big room (issue 13: "presence must never make sync heavy").

1. A fresh Peyvand on SQLite (``bench.servers.PeyvandServer``). N users (default 1,000)
   register and join one public room; one more user, an outsider, is in a room alone.
2. Every member but the changer, and the outsider, syncs once with ``set_presence=offline``
   (so their own syncs change nothing), then drains what the joins brought.
3. All of them long-poll ``/sync`` from their token with ``set_presence=offline``; after a
   second of quiet the changer PUTs ``unavailable`` with a status message. Measured: the
   time from sending the PUT until each member's long-poll returns the change (p50, p99,
   max; the PUT's own time included), the bytes of those responses, the server's CPU
   seconds for the whole fan-out, and whether the outsider's long-poll stayed asleep (it
   must: it shares no room).

Prints a Markdown table and writes ``bench/results/presence-<timestamp>-sqlite.json``.
Everything is bounded (``--budget`` seconds overall, default 600); loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench import procstat
from bench.alone import run_on_fresh_peyvand, write_figures
from bench.client import Account, MatrixClient, new_session
from bench.run import RESULTS_DIR
from bench.servers import PeyvandServer
from bench.workloads import percentile

POLL_MS = 30_000
OUTSIDER_POLL_MS = 5_000
SETUP_CONCURRENCY = 8
# Only presence matters here: no room data in the members' syncs.
FILTER = '{"room":{"rooms":[]},"account_data":{"not_types":["*"]}}'


@dataclass
class Figures:
    members: int
    delivered: int = 0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    latency_max_ms: float = 0.0
    response_bytes_p50: float = 0.0
    server_cpu_seconds: float = 0.0
    outsider_woken: bool = False
    setup_seconds: float = 0.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.presence", description=__doc__)
    parser.add_argument("--members", type=int, default=1000, help="members of the room")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds for the run")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.members < 2:
        parser.error("--members must be at least 2")
    figures = Figures(args.members)
    run_on_fresh_peyvand("presence", args.budget, lambda server: _run(server, figures))
    path = write_figures(args.out, "presence", "presence fan-out", figures)
    print(table(figures))
    print(f"\nJSON: {path}")
    passed = figures.delivered == args.members - 1 and not figures.outsider_woken
    return 0 if passed else 1


async def _bounded(items: list[Any], work: Any) -> list[Any]:
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(item: Any) -> Any:
        async with gate:
            return await work(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


async def _sync(
    client: MatrixClient, account: Account, since: str | None, timeout_ms: int
) -> tuple[dict[str, Any], int]:
    params = {"timeout": str(timeout_ms), "set_presence": "offline", "filter": FILTER}
    if since is not None:
        params["since"] = since
    reply = await client.request("GET", "sync", token=account.access_token, params=params)
    if reply.status != 200:
        raise RuntimeError(f"sync answered {reply.status}: {reply.body}")
    body: dict[str, Any] = reply.body
    return body, reply.size


async def _run(server: PeyvandServer, figures: Figures) -> None:
    started = time.perf_counter()
    prefix = f"p{uuid.uuid4().hex[:6]}"
    async with new_session() as session:
        client = MatrixClient(session, server.base_url)
        members = await _bounded([f"{prefix}-{i}" for i in range(figures.members)], client.register)
        outsider = await client.register(f"{prefix}-outsider")
        changer, receivers = members[0], members[1:]
        room_id = await client.create_room(changer)
        await _bounded(receivers, lambda a: client.join(a, room_id))
        await client.create_room(outsider)
        log(f"{figures.members} members joined in {time.perf_counter() - started:.0f} s")

        async def token_for(account: Account) -> str:
            body, _ = await _sync(client, account, None, 0)
            drained, _ = await _sync(client, account, body["next_batch"], 0)
            return str(drained["next_batch"])

        tokens = await _bounded([*receivers, outsider], token_for)
        figures.setup_seconds = round(time.perf_counter() - started, 1)

        put_done = asyncio.get_running_loop().create_future()

        async def wait_for_change(account: Account, token: str) -> tuple[float, int] | None:
            since = token
            deadline = time.perf_counter() + POLL_MS / 1000
            while time.perf_counter() < deadline:
                body, size = await _sync(client, account, since, POLL_MS)
                if any(e["sender"] == changer.user_id for e in body["presence"]["events"]):
                    sent_at: float = await put_done
                    return time.perf_counter() - sent_at, size
                since = body["next_batch"]
            return None

        polls = [
            asyncio.create_task(wait_for_change(a, t))
            for a, t in zip(receivers, tokens, strict=False)
        ]
        outsider_poll = asyncio.create_task(_sync(client, outsider, tokens[-1], OUTSIDER_POLL_MS))
        await asyncio.sleep(1.0)
        cpu_before = procstat.tree_cpu_seconds(server.pid)
        status = f"presence/{quote(changer.user_id)}/status"
        body = {"presence": "unavailable", "status_msg": "measuring"}
        put_started = time.perf_counter()
        reply = await client.request("PUT", status, body, token=changer.access_token)
        if reply.status != 200:
            raise RuntimeError(f"PUT presence answered {reply.status}: {reply.body}")
        put_done.set_result(put_started)
        results = [r for r in await asyncio.gather(*polls) if r is not None]
        figures.server_cpu_seconds = round(procstat.tree_cpu_seconds(server.pid) - cpu_before, 3)
        outsider_body, _ = await outsider_poll
        figures.outsider_woken = bool(outsider_body["presence"]["events"])
        figures.delivered = len(results)
        latencies = [seconds * 1000 for seconds, _ in results]
        if latencies:
            figures.latency_p50_ms = round(percentile(latencies, 50), 1)
            figures.latency_p99_ms = round(percentile(latencies, 99), 1)
            figures.latency_max_ms = round(max(latencies), 1)
            figures.response_bytes_p50 = percentile([float(s) for _, s in results], 50)


def table(f: Figures) -> str:
    rows = [
        ("room members", f"{f.members:,}"),
        ("members who got the change", f"{f.delivered:,}"),
        (
            "delivery p50 / p99 / max (ms)",
            f"{f.latency_p50_ms} / {f.latency_p99_ms} / {f.latency_max_ms}",
        ),
        ("bytes of a member's sync response (p50)", f"{f.response_bytes_p50:.0f}"),
        ("server CPU for the whole fan-out (s)", f"{f.server_cpu_seconds}"),
        ("outsider's long-poll woken", "yes" if f.outsider_woken else "no"),
        ("setup (s)", f"{f.setup_seconds}"),
    ]
    lines = ["| measure | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
