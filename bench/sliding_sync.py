"""``python -m bench.sliding_sync [--postgres] [--only NAME] [--smoke] [--rooms N ...]
[--connections C]``: simplified sliding sync (MSC4186), Peyvand and Synapse side by side
(issue 18).

Both servers are started fresh (as ``python -m bench.rooms`` does: new data directories,
or new databases on one throwaway PostgreSQL cluster) and run side by side, each on the
server CPUs (``bench.cpus``). For each ``--rooms`` count (default 100 and 1,000; the
readers' rooms grow from one count to the next), each server's reader gets its rooms
(one server after the other), then ``bench.sliding_workloads`` measures the first
response of a fresh connection for a 20-room window (p50/p99 over K connections) and the
incremental wake of a long-poll (p50/p99), **alternating between the servers request by
request and wake by wake**: this machine's speed drifts by more than half within
minutes (``docs/benchmarks.md``, twelfth run), which measured one server after the other
would put in the ratio. The server not being measured is idle meanwhile. At the largest
count, C connections (default 1,000) are opened and left long-polling on one server,
then on the other, and each one's RSS growth and CPU are read. Synapse 1.163 serves the
endpoint without an experimental flag (``experimental_features.msc3575_enabled`` is on by
default).

Set-up is not timed; both servers hash passwords with a bcrypt cost of 4. The run is
bounded by ``SERVER_BUDGET_SECONDS`` per server (``SMOKE_BUDGET_SECONDS`` with
``--smoke``); a count whose rooms a server could not all set up in time is reported for
it as ``truncated`` with the rooms it reached, and its counts after it are skipped.

The table goes to stdout, the figures to ``bench/results/sliding-sync-<timestamp>-<db>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import cpus, procstat, report
from bench.client import MatrixClient, new_session
from bench.run import RESULTS_DIR, log, measure_together, publish, run_bounded
from bench.servers import PeyvandServer, Server, SynapseServer, ensure_synapse
from bench.sliding_workloads import (
    FULL,
    SMOKE,
    FirstResponses,
    Setup,
    SizeFigures,
    Sizes,
    Wakes,
    grow,
    hold_connections,
    raise_fd_limit,
    register_pair,
)
from bench.workloads import Clock

SERVER_BUDGET_SECONDS = 1500.0
SMOKE_BUDGET_SECONDS = 120.0
IDLE_SETTLE_SECONDS = 3.0
STOP_RESERVE_SECONDS = 15.0  # kept back from the budget for stopping the servers
SETUP_BCRYPT_ROUNDS = 4
SERVERS: dict[str, Callable[[Path, str | None], Server]] = {
    "peyvand": lambda data_dir, url: PeyvandServer(data_dir, url, SETUP_BCRYPT_ROUNDS),
    "synapse": lambda data_dir, url: SynapseServer(
        data_dir, url, {"bcrypt_rounds": SETUP_BCRYPT_ROUNDS}
    ),
}


@dataclass(slots=True)
class SlidingResult:
    name: str
    version: str
    sizes: list[SizeFigures]
    rss_idle_bytes: int = 0
    rss_peak_bytes: int = 0
    seconds: float = math.nan

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        for figures, out in zip(self.sizes, document["sizes"], strict=True):
            out["rss_growth_bytes"] = figures.rss_growth_bytes
            out["kib_per_connection"] = figures.kib_per_connection
            out["cpu_ms_per_connection"] = figures.cpu_ms_per_connection
        return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sliding_sync", description=__doc__)
    parser.add_argument("--postgres", action="store_true", help="both on one PostgreSQL cluster")
    parser.add_argument("--only", choices=sorted(SERVERS), help="run one server only")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check the setup")
    parser.add_argument("--rooms", type=int, nargs="+", help="the reader's room counts")
    parser.add_argument("--connections", type=int, help="connections held open (0: none)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let the servers and the client share the CPUs (see bench/cpus.py)",
    )
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if args.rooms:
        if min(args.rooms) < 1:
            parser.error("--rooms: each count must be at least 1")
        sizes = dataclasses.replace(sizes, rooms=tuple(sorted(set(args.rooms))))
    if args.connections is not None:
        sizes = dataclasses.replace(sizes, connections=max(0, args.connections))
    raise_fd_limit(sizes.connections)  # before the servers start: they inherit it
    placement = None if args.no_pin else cpus.split()
    if placement is not None:
        # Before any thread or child starts (with --postgres the throwaway cluster too,
        # which therefore runs on the client's CPUs: recorded in the JSON).
        cpus.pin_client(placement)
    elif not args.no_pin:
        log("not placed: one CPU to use, or no taskset (bench/cpus.py)")
    budget = SMOKE_BUDGET_SECONDS if args.smoke else SERVER_BUDGET_SECONDS
    names = [args.only] if args.only else list(SERVERS)
    if "synapse" in names:
        ensure_synapse()
    started = time.monotonic()
    results = measure_together(
        names, args.postgres, lambda urls: _measure(urls, sizes, budget, placement)
    )
    publish(
        args.out,
        "sliding-sync",
        benchmark="simplified sliding sync, servers side by side",
        database="postgres" if args.postgres else "sqlite",
        sizes=asdict(sizes),
        cpus=placement.to_json(database=args.postgres) if placement is not None else None,
        servers={name: result.to_json() for name, result in results.items()},
        summary=summarize(results.get("peyvand"), results.get("synapse"), sizes),
        started=started,
    )
    return 0


def _measure(
    urls: dict[str, str | None],
    sizes: Sizes,
    budget: float,
    placement: cpus.CpuSplit | None,
) -> dict[str, SlidingResult]:
    """Every server of ``urls`` (name -> its database, None: SQLite), fresh in a new data
    directory that is removed afterwards, whatever fails; on ``placement.server`` when
    given; measured side by side within ``budget`` seconds each."""
    stop_by = time.perf_counter() + budget * len(urls)
    started = time.monotonic()
    with ExitStack() as stack:
        servers: dict[str, Server] = {}
        for name, url in urls.items():
            data_dir = Path(tempfile.mkdtemp(prefix=f"bench-sliding-{name}-"))
            stack.callback(shutil.rmtree, data_dir, ignore_errors=True)
            servers[name] = SERVERS[name](data_dir, url)
            servers[name].cpus = placement
        samplers: dict[str, procstat.Sampler] = {}
        try:
            for name, server in servers.items():
                log(f"==> {name}: starting")
                stack.callback(server.stop)
                server.start()
                samplers[name] = procstat.Sampler(server.pid)
                samplers[name].start()
                stack.callback(samplers[name].stop)
            time.sleep(IDLE_SETTLE_SECONDS)
            results = {
                name: SlidingResult(name, server.version(), []) for name, server in servers.items()
            }
            for name, server in servers.items():
                results[name].rss_idle_bytes = procstat.tree_rss_bytes(server.pid)
            clock = Clock(stop_by - STOP_RESERVE_SECONDS)
            sides = [(s.base_url, s.pid, results[name]) for name, s in servers.items()]
            run_bounded(run_side_by_side(sides, sizes, clock), clock)
        except BaseException:
            for name, server in servers.items():
                log(f"  the last lines of {name}'s log:\n{server.tail()}")
            raise
        for name, sampler in samplers.items():
            sampler.stop()
            results[name].rss_peak_bytes = sampler.peak_bytes
            results[name].seconds = round(time.monotonic() - started, 1)
        return results


@dataclass(slots=True)
class _Side:
    """One server of a side-by-side run, with its client and its reader's rooms."""

    base_url: str
    pid: int
    result: SlidingResult
    session: aiohttp.ClientSession
    client: MatrixClient
    setup: Setup
    # Its rooms fell short of a count: it takes no part in the larger ones.
    stopped: bool = False

    @property
    def name(self) -> str:
        return self.result.name


async def run_all(
    base_url: str, pid: int, sizes: Sizes, clock: Clock, result: SlidingResult
) -> None:
    """One server alone (``run_side_by_side`` with one side)."""
    await run_side_by_side([(base_url, pid, result)], sizes, clock)


async def run_side_by_side(
    servers: Sequence[tuple[str, int, SlidingResult]], sizes: Sizes, clock: Clock
) -> None:
    """Each room count in turn: every server's rooms set up, then their first responses
    and their wakes, alternating between the servers step by step; connections at the
    last count, one server after the other. ``servers``: (base URL, PID, the result to
    fill) each."""
    async with AsyncExitStack() as stack:
        sides: list[_Side] = []
        for base_url, pid, result in servers:
            session = await stack.enter_async_context(new_session())
            client = MatrixClient(session, base_url)
            setup = await register_pair(client, f"ss{uuid.uuid4().hex[:6]}")
            sides.append(_Side(base_url, pid, result, session, client, setup))
        for count in sizes.rooms:
            active = [side for side in sides if not side.stopped]
            if not active:
                break
            figures: dict[str, SizeFigures] = {}
            for side in active:
                figures[side.name] = SizeFigures(requested_rooms=count)
                side.result.sizes.append(figures[side.name])
                await _grow(side, figures[side.name], count, sizes, clock)
            firsts = [
                FirstResponses(side.session, side.base_url, side.setup, figures[side.name], sizes)
                for side in active
            ]
            await _alternate(
                [first.step for first in firsts],
                firsts[0].indexes,
                clock.after(sizes.phase_seconds * len(active)),
            )
            waking = [
                Wakes(side.client, side.session, side.setup, figures[side.name], sizes)
                for side in active
            ]
            for wakes in waking:
                await wakes.start()
            await _alternate(
                [wakes.step for wakes in waking],
                waking[0].indexes,
                clock.after(sizes.phase_seconds * len(active)),
            )
            for first, wakes, side in zip(firsts, waking, active, strict=True):
                first.finish()
                wakes.finish()
                done = figures[side.name]
                log(
                    f"  {side.name}, {done.rooms} rooms: first response p50 "
                    f"{done.first_p50_ms:.2f} ms, wake p50 {done.wake_p50_ms:.2f} ms"
                )
                side.stopped = done.truncated
        for side in sides:
            last = side.result.sizes[-1]
            await hold_connections(side.base_url, side.pid, side.setup, last, sizes, clock)
            if last.connections_requested:
                log(
                    f"  {side.name}: {last.connections_held} connections held: RSS +"
                    f"{last.rss_growth_bytes / report.MIB:.1f} MiB in {last.open_seconds} s"
                )


async def _grow(side: _Side, figures: SizeFigures, count: int, sizes: Sizes, clock: Clock) -> None:
    """The side's reader in ``count`` rooms (not timed), or as many as time allowed."""
    mark = time.perf_counter()
    figures.rooms = await grow(side.client, side.setup, count, sizes, clock)
    figures.setup_seconds = round(time.perf_counter() - mark, 1)
    figures.truncated = figures.rooms < count
    log(f"  {side.name}: {figures.rooms} rooms set up ({figures.setup_seconds} s)")


async def _alternate(
    steps: Sequence[Callable[[int], Awaitable[None]]], indexes: range, deadline: float
) -> None:
    """Each index in turn, every server's step for it one after the other, until
    ``deadline``: a drift of the machine's speed reaches every server alike."""
    for index in indexes:
        if time.perf_counter() > deadline:
            return
        for step in steps:
            await step(index)


def summarize(
    peyvand: SlidingResult | None, synapse: SlidingResult | None, sizes: Sizes
) -> dict[str, Any]:
    """The rows of the side-by-side table and the issue's 10x targets (at the largest count)."""
    metrics: list[tuple[str, str, str, bool, Callable[[SizeFigures], float]]] = [
        ("rooms", "rooms joined", "count", True, lambda f: f.rooms),
        ("first_p50", "first response (20-room window) p50", "ms", False,
         lambda f: f.first_p50_ms),
        ("first_p99", "first response p99", "ms", False, lambda f: f.first_p99_ms),
        ("first_size", "first response size", "KiB", False, lambda f: f.first_bytes / 1024),
        ("window", "rooms in the window", "count", True, lambda f: f.window_rooms),
        ("wake_p50", "incremental wake p50 (from the send's 200)", "ms", False,
         lambda f: f.wake_p50_ms),
        ("wake_p99", "incremental wake p99", "ms", False, lambda f: f.wake_p99_ms),
        ("wake_req_p50", "wake p50 from the send's request", "ms", False,
         lambda f: f.wake_from_request_p50_ms),
        ("wake_req_p99", "wake p99 from the send's request", "ms", False,
         lambda f: f.wake_from_request_p99_ms),
        ("wake_missing", "wakes missing", "count", False, lambda f: f.wake_missing),
    ]  # fmt: skip
    rows = []
    for count in sizes.rooms:
        for key, label, unit, better_high, value in metrics:
            rows.append(
                report.row(
                    f"r{count}_{key}",
                    f"{count:,} rooms: {label}",
                    unit,
                    better_high,
                    _at(peyvand, count, value),
                    _at(synapse, count, value),
                )
            )
    top = sizes.rooms[-1]
    held: list[tuple[str, str, str, bool, Callable[[SizeFigures], float]]] = [
        ("held", "connections held", "count", True, lambda f: f.connections_held),
        ("held_rss", "RSS growth for the held connections", "MiB", False,
         lambda f: f.rss_growth_bytes / report.MIB if f.connections_held else math.nan),
        ("held_kib", "RSS per connection", "KiB", False, lambda f: f.kib_per_connection),
        ("held_cpu", "CPU to open a connection", "ms", False, lambda f: f.cpu_ms_per_connection),
        ("held_open", "time to open them all", "s", False, lambda f: f.open_seconds),
        ("held_idle_cpu", "CPU over 5 s with all waiting", "s", False,
         lambda f: f.cpu_idle_seconds),
    ]  # fmt: skip
    if sizes.connections:
        for key, label, unit, better_high, value in held:
            rows.append(
                report.row(
                    key,
                    f"{sizes.connections:,} connections, {top:,} rooms: {label}",
                    unit,
                    better_high,
                    _at(peyvand, top, value),
                    _at(synapse, top, value),
                )
            )
    low = sizes.rooms[0]
    if top != low:
        for key, label in (("first_p50", "first response p50"), ("wake_p50", "wake p50")):
            rows.append(
                report.row(
                    f"flat_{key}",
                    f"{label} at {top:,} rooms / at {low:,} (flat: 1)",
                    "x",
                    False,
                    _growth(peyvand, key, low, top),
                    _growth(synapse, key, low, top),
                )
            )
    rows.append(
        report.row(
            "rss_peak",
            "peak RSS, whole run",
            "MiB",
            False,
            peyvand.rss_peak_bytes / report.MIB if peyvand else math.nan,
            synapse.rss_peak_bytes / report.MIB if synapse else math.nan,
        )
    )
    targets = [
        report.Target(f"r{top}_first_p50", "first response p50 <= 1/10 of Synapse", 0.1, False),
        report.Target(f"r{top}_first_p99", "first response p99 <= 1/10 of Synapse", 0.1, False),
        report.Target(f"r{top}_wake_p50", "wake p50 <= 1/10 of Synapse", 0.1, False),
        report.Target(f"r{top}_wake_p99", "wake p99 <= 1/10 of Synapse", 0.1, False),
    ]
    return report.summarize(rows, targets)


def _growth(result: SlidingResult | None, key: str, low: int, top: int) -> float:
    """A figure (``first_p50`` or ``wake_p50``) at ``top`` rooms over the same at ``low``."""

    def value(f: SizeFigures) -> float:
        return float(getattr(f, f"{key}_ms"))

    high, base = _at(result, top, value), _at(result, low, value)
    return high / base if base and not math.isnan(base) else math.nan


def _at(result: SlidingResult | None, count: int, value: Callable[[SizeFigures], float]) -> float:
    """``value`` at ``count`` rooms (NaN if the server did not get there)."""
    if result is None:
        return math.nan
    for figures in result.sizes:
        if figures.requested_rooms == count:
            return float(value(figures))
    return math.nan


if __name__ == "__main__":
    raise SystemExit(main())
