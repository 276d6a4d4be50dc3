"""``python -m bench.rooms [--postgres] [--only NAME] [--smoke] [--members N ...]``: hot
rooms and big rooms, Peyvand and Synapse side by side (issue 15 item 1).

Each server is started fresh (as ``python -m bench`` does: new data directory, or a new
database on one throwaway PostgreSQL cluster), measured idle, put through
``bench.room_workloads`` while its process tree's RSS is sampled, and stopped; then the
other. The hot room runs first (16 senders, 200 members, all long-polling); then one room
grows through each ``--members`` count (default 100 and 1,000), measured at each.

Set-up is not timed. Both servers hash passwords with a bcrypt cost of 4 here (Synapse's
``bcrypt_rounds``, as the test harness and Complement do; Peyvand's
``registration.bcrypt_rounds``): no figure depends on the cost of a password hash. Each
server's run is bounded by ``SERVER_BUDGET_SECONDS`` (``SMOKE_BUDGET_SECONDS`` with
``--smoke``); a count whose members could not all join in time is reported as
``truncated`` with the members it reached, and the counts after it are skipped.

The table goes to stdout, the figures to ``bench/results/rooms-<timestamp>-<db>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import procstat, report
from bench.client import Account, MatrixClient, new_session
from bench.room_workloads import (
    FULL,
    SMOKE,
    BigRoomFigures,
    HotRoomFigures,
    RoomSizes,
    big_room_at,
    hot_room,
    join_all,
)
from bench.run import RESULTS_DIR, log, measure_each, publish, run_bounded
from bench.servers import PeyvandServer, Server, SynapseServer, ensure_synapse
from bench.workloads import Clock, bounded_map

SERVER_BUDGET_SECONDS = 1500.0
SMOKE_BUDGET_SECONDS = 120.0
IDLE_SETTLE_SECONDS = 3.0
# Kept back from a server's budget for stopping it.
STOP_RESERVE_SECONDS = 15.0
# Registration only: no figure depends on the cost of a password hash.
SETUP_BCRYPT_ROUNDS = 4
SYNAPSE_CONFIG = {"bcrypt_rounds": SETUP_BCRYPT_ROUNDS}
SERVERS: dict[str, Callable[[Path, str | None], Server]] = {
    "peyvand": lambda data_dir, url: PeyvandServer(data_dir, url, SETUP_BCRYPT_ROUNDS),
    "synapse": lambda data_dir, url: SynapseServer(data_dir, url, SYNAPSE_CONFIG),
}
HOT_TARGETS = [
    report.Target("hot_rate", "hot-room throughput >= 20x Synapse", 20.0, True),
    # From the send's request: a /sync woken before its sender's 200 gives 0 from the 200.
    report.Target("hot_req_p99", "hot-room delivery p99 <= 1/5 of Synapse", 0.2, False),
]


@dataclass(slots=True)
class RoomsResult:
    name: str
    version: str
    hot: HotRoomFigures
    big: list[BigRoomFigures]
    rss_idle_bytes: int = 0
    rss_peak_bytes: int = 0
    registered: int = 0
    register_seconds: float = math.nan
    seconds: float = math.nan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rooms", description=__doc__)
    parser.add_argument("--postgres", action="store_true", help="both on one PostgreSQL cluster")
    parser.add_argument("--only", choices=sorted(SERVERS), help="run one server only")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check the setup")
    parser.add_argument("--members", type=int, nargs="+", help="big-room member counts")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if args.members:
        if min(args.members) < 2:
            parser.error("--members: each count must be at least 2")
        sizes = dataclasses.replace(sizes, big_members=tuple(sorted(set(args.members))))
    budget = SMOKE_BUDGET_SECONDS if args.smoke else SERVER_BUDGET_SECONDS
    names = [args.only] if args.only else list(SERVERS)
    if "synapse" in names:
        ensure_synapse()
    database = "postgres" if args.postgres else "sqlite"
    started = time.monotonic()
    results = measure_each(
        names, args.postgres, budget, lambda name, url: _measure(name, url, sizes, budget)
    )
    publish(
        args.out,
        "rooms",
        benchmark="hot and big rooms",
        database=database,
        sizes=asdict(sizes),
        servers={name: asdict(result) for name, result in results.items()},
        summary=summarize(results.get("peyvand"), results.get("synapse"), sizes),
        started=started,
    )
    return 0


def _measure(name: str, database_url: str | None, sizes: RoomSizes, budget: float) -> RoomsResult:
    """One server, fresh in a new data directory that is removed afterwards, whatever fails."""
    stop_by = time.perf_counter() + budget
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-rooms-{name}-"))
    try:
        return _measure_server(name, SERVERS[name](data_dir, database_url), sizes, stop_by)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _measure_server(name: str, server: Server, sizes: RoomSizes, stop_by: float) -> RoomsResult:
    started = time.monotonic()
    sampler: procstat.Sampler | None = None
    try:
        server.start()
        sampler = procstat.Sampler(server.pid)
        sampler.start()
        time.sleep(IDLE_SETTLE_SECONDS)
        result = RoomsResult(name, server.version(), HotRoomFigures(), [])
        result.rss_idle_bytes = procstat.tree_rss_bytes(server.pid)
        clock = Clock(stop_by - STOP_RESERVE_SECONDS)
        run_bounded(run_all(server.base_url, server.pid, sizes, clock, result), clock)
        sampler.stop()
        result.rss_peak_bytes = sampler.peak_bytes
        result.seconds = round(time.monotonic() - started, 1)
        return result
    except BaseException:
        log(f"  {name} failed; the last lines of its log:\n{server.tail()}")
        raise
    finally:
        if sampler is not None:
            sampler.stop()
        server.stop()


async def run_all(
    base_url: str, pid: int, sizes: RoomSizes, clock: Clock, result: RoomsResult
) -> None:
    """Register, then the hot room, then the big room at each size; into ``result``."""

    def cpu() -> float:
        return procstat.tree_cpu_seconds(pid)

    prefix = f"rooms{uuid.uuid4().hex[:6]}"
    counts = sizes.big_members
    wanted = max(sizes.hot_members, *counts) + len(counts)
    async with new_session() as session:
        client = MatrixClient(session, base_url)
        mark = time.perf_counter()
        accounts = await bounded_map(
            (f"{prefix}-{i}" for i in range(wanted)),
            client.register,
            sizes.setup_concurrency,
            clock.after(sizes.setup_seconds),
        )
        result.registered = len(accounts)
        result.register_seconds = round(time.perf_counter() - mark, 1)
        log(f"  registered {len(accounts)} of {wanted} in {result.register_seconds} s")
        newcomers, members = accounts[: len(counts)], accounts[len(counts) :]
        result.hot = await hot_room(client, members[: sizes.hot_members], sizes, clock, cpu)
        log(f"  hot room: {result.hot.sent} messages, {result.hot.messages_per_second:.0f}/s")
        room = await client.create_room(members[0])
        joined = 1
        for count, newcomer in zip(counts, newcomers, strict=True):
            figures = BigRoomFigures(requested_members=count)
            result.big.append(figures)
            sampler = procstat.Sampler(pid)
            sampler.start()
            try:
                await _measure_big(
                    client, room, members, joined, newcomer, figures, sizes, clock, cpu
                )
            finally:
                sampler.stop()
            figures.rss_peak_bytes = sampler.peak_bytes
            joined = figures.members
            log(
                f"  big room {count}: {figures.members} members (joins "
                f"{figures.join_seconds:.0f} s), CPU {figures.cpu_ms_per_message:.1f} ms/message"
            )
            if figures.truncated and joined < count:
                break


async def _measure_big(
    client: MatrixClient,
    room: str,
    members: list[Account],
    joined: int,
    newcomer: Account,
    figures: BigRoomFigures,
    sizes: RoomSizes,
    clock: Clock,
    cpu: Callable[[], float],
) -> None:
    """Grow ``room`` from ``joined`` members to ``figures.requested_members``, measure it."""
    mark = time.perf_counter()
    target = min(figures.requested_members, len(members))
    deadline = clock.after(sizes.setup_seconds)
    joined += await join_all(
        client, members[joined:target], room, sizes.setup_concurrency, deadline
    )
    figures.join_seconds = round(time.perf_counter() - mark, 1)
    figures.members = joined
    figures.truncated = joined < figures.requested_members
    await big_room_at(client, room, members[:joined], newcomer, figures, sizes, clock, cpu)


def summarize(
    peyvand: RoomsResult | None, synapse: RoomsResult | None, sizes: RoomSizes
) -> dict[str, Any]:
    """The rows of the side-by-side table, and the issue's hot-room targets."""

    def both(value: Callable[[RoomsResult], float]) -> tuple[float, float]:
        return (
            value(peyvand) if peyvand else math.nan,
            value(synapse) if synapse else math.nan,
        )

    def hot(key: str, label: str, unit: str, better_high: bool, attr: str) -> dict[str, Any]:
        return report.row(key, label, unit, better_high, *both(lambda r: getattr(r.hot, attr)))

    rows = [
        hot("hot_rate", "hot: send throughput (16 senders)", "msg/s", True, "messages_per_second"),
        hot("hot_p50", "hot: send p50", "ms", False, "send_p50_ms"),
        hot("hot_p99", "hot: send p99", "ms", False, "send_p99_ms"),
        hot("hot_deliv_p50", "hot: delivery p50 (200 syncing)", "ms", False, "delivery_p50_ms"),
        hot("hot_deliv_p99", "hot: delivery p99", "ms", False, "delivery_p99_ms"),
        hot("hot_req_p50", "hot: delivery p50 from the send's request", "ms", False,
            "from_request_p50_ms"),
        hot("hot_req_p99", "hot: delivery p99 from the send's request", "ms", False,
            "from_request_p99_ms"),
        hot("hot_skipped", "hot: skipped by limited timelines", "count", False, "skipped"),
        hot("hot_missing", "hot: deliveries missing", "count", False, "missing"),
        hot("hot_cpu", "hot: CPU per 1,000 messages", "s", False, "cpu_seconds_per_1000_messages"),
    ]  # fmt: skip
    big_metrics = [
        ("members", "members joined", "count", True, lambda f: f.members),
        ("deliv_p50", "delivery p50", "ms", False, lambda f: f.delivery_p50_ms),
        ("deliv_p99", "delivery p99", "ms", False, lambda f: f.delivery_p99_ms),
        ("req_p50", "delivery p50 from the send's request", "ms", False,
         lambda f: f.from_request_p50_ms),
        ("req_p99", "delivery p99 from the send's request", "ms", False,
         lambda f: f.from_request_p99_ms),
        ("missing", "deliveries missing", "count", False, lambda f: f.missing),
        ("cpu", "CPU per message (nobody syncing)", "ms", False, lambda f: f.cpu_ms_per_message),
        ("members_p50", "/members p50", "ms", False, lambda f: f.members_p50_ms),
        ("joined_p50", "/joined_members p50", "ms", False, lambda f: f.joined_members_p50_ms),
        ("isync", "newcomer's initial sync (lazy)", "ms", False, lambda f: f.initial_sync_p50_ms),
        ("isync_size", "newcomer's initial sync size", "KiB", False,
         lambda f: f.initial_sync_bytes / 1024),
        ("rss", "peak RSS", "MiB", False, lambda f: f.rss_peak_bytes / report.MIB),
    ]  # fmt: skip
    for count in sizes.big_members:
        for key, label, unit, better_high, value in big_metrics:
            rows.append(
                report.row(
                    f"big{count}_{key}",
                    f"big {count:,}: {label}",
                    unit,
                    better_high,
                    *both(_big_value(count, value)),
                )
            )
    rows.append(
        report.row(
            "rss_peak",
            "peak RSS, whole run",
            "MiB",
            False,
            *both(lambda r: r.rss_peak_bytes / report.MIB),
        )
    )
    return report.summarize(rows, HOT_TARGETS)


def _big_value(
    count: int, value: Callable[[BigRoomFigures], float]
) -> Callable[[RoomsResult], float]:
    """``value`` of a result's big room at ``count`` members (NaN if it did not get there)."""

    def read(result: RoomsResult) -> float:
        for figures in result.big:
            if figures.requested_members == count:
                return float(value(figures))
        return math.nan

    return read


if __name__ == "__main__":
    raise SystemExit(main())
