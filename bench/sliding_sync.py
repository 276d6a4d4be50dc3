"""``python -m bench.sliding_sync [--postgres] [--only NAME] [--smoke] [--rooms N ...]
[--connections C]``: simplified sliding sync (MSC4186), Peyvand and Synapse side by side
(issue 18).

Each server is started fresh (as ``python -m bench.rooms`` does: new data directory, or a
new database on one throwaway PostgreSQL cluster), then, for each ``--rooms`` count
(default 100 and 1,000; the reader's rooms grow from one count to the next), measured by
``bench.sliding_workloads``: the first response of a fresh connection for a 20-room window
(p50/p99 over K connections) and the incremental wake of a long-poll (p50/p99); at the
largest count, C connections (default 1,000) are opened and left long-polling, and the
server's RSS growth and CPU are read. Then the other server. Synapse 1.163 serves the
endpoint without an experimental flag (``experimental_features.msc3575_enabled`` is on by
default).

Set-up is not timed; both servers hash passwords with a bcrypt cost of 4. Each server's
run is bounded by ``SERVER_BUDGET_SECONDS`` (``SMOKE_BUDGET_SECONDS`` with ``--smoke``); a
count whose rooms could not all be set up in time is reported as ``truncated`` with the
rooms it reached, and the counts after it are skipped.

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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import cpus, procstat, report
from bench.client import MatrixClient, new_session
from bench.run import RESULTS_DIR, log, measure_each, publish, run_bounded
from bench.servers import PeyvandServer, Server, SynapseServer, ensure_synapse
from bench.sliding_workloads import (
    FULL,
    SMOKE,
    Setup,
    SizeFigures,
    Sizes,
    first_responses,
    grow,
    hold_connections,
    raise_fd_limit,
    register_pair,
    wakes,
)
from bench.workloads import Clock

SERVER_BUDGET_SECONDS = 1500.0
SMOKE_BUDGET_SECONDS = 120.0
IDLE_SETTLE_SECONDS = 3.0
STOP_RESERVE_SECONDS = 15.0  # kept back from a server's budget for stopping it
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
    results = measure_each(
        names,
        args.postgres,
        budget,
        lambda name, url: _measure(name, url, sizes, budget, placement),
    )
    publish(
        args.out,
        "sliding-sync",
        benchmark="simplified sliding sync",
        database="postgres" if args.postgres else "sqlite",
        sizes=asdict(sizes),
        cpus=placement.to_json(database=args.postgres) if placement is not None else None,
        servers={name: result.to_json() for name, result in results.items()},
        summary=summarize(results.get("peyvand"), results.get("synapse"), sizes),
        started=started,
    )
    return 0


def _measure(
    name: str,
    database_url: str | None,
    sizes: Sizes,
    budget: float,
    placement: cpus.CpuSplit | None,
) -> SlidingResult:
    """One server, fresh in a new data directory that is removed afterwards, whatever fails;
    on ``placement.server`` when given."""
    stop_by = time.perf_counter() + budget
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-sliding-{name}-"))
    try:
        server = SERVERS[name](data_dir, database_url)
        server.cpus = placement
        return _measure_server(name, server, sizes, stop_by)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _measure_server(name: str, server: Server, sizes: Sizes, stop_by: float) -> SlidingResult:
    started = time.monotonic()
    sampler: procstat.Sampler | None = None
    try:
        server.start()
        sampler = procstat.Sampler(server.pid)
        sampler.start()
        time.sleep(IDLE_SETTLE_SECONDS)
        result = SlidingResult(name, server.version(), [])
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
    base_url: str, pid: int, sizes: Sizes, clock: Clock, result: SlidingResult
) -> None:
    """Each room count in turn (set-up, first responses, wakes); connections at the last."""
    async with new_session() as session:
        client = MatrixClient(session, base_url)
        setup: Setup = await register_pair(client, f"ss{uuid.uuid4().hex[:6]}")
        for count in sizes.rooms:
            figures = SizeFigures(requested_rooms=count)
            result.sizes.append(figures)
            mark = time.perf_counter()
            figures.rooms = await grow(client, setup, count, sizes, clock)
            figures.setup_seconds = round(time.perf_counter() - mark, 1)
            figures.truncated = figures.rooms < count
            log(f"  {figures.rooms} rooms set up ({figures.setup_seconds} s)")
            await first_responses(session, base_url, setup, figures, sizes, clock)
            await wakes(client, session, setup, figures, sizes, clock)
            log(
                f"  {figures.rooms} rooms: first response p50 {figures.first_p50_ms:.1f} ms, "
                f"wake p50 {figures.wake_p50_ms:.1f} ms"
            )
            if figures.truncated:
                break
        last = result.sizes[-1]
        await hold_connections(base_url, pid, setup, last, sizes, clock)
        if last.connections_requested:
            log(
                f"  {last.connections_held} connections held: RSS +"
                f"{last.rss_growth_bytes / report.MIB:.1f} MiB in {last.open_seconds} s"
            )


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
