"""``python -m bench [--postgres] [--only NAME] [--smoke]``: Peyvand and Synapse, side by side.

Each server is started fresh (new data directory; with ``--postgres`` a new database on one
throwaway PostgreSQL cluster), measured idle, then put through every workload of
``bench.workloads`` while its process tree's RSS is sampled every 100 ms, and stopped; the
other server follows, so they never compete for the two cores. The table goes to stdout and
the same figures to ``bench/results/<timestamp>.json``.

The whole run is bounded: every loop by count and time, each server by ``SERVER_BUDGET``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bench import procstat, report, workloads
from bench.client import MatrixClient, new_session
from bench.servers import (
    BENCH_DIR,
    PeyvandDeployment,
    PeyvandServer,
    Server,
    SynapseServer,
    ensure_synapse,
)

REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
IDLE_SETTLE_SECONDS = 3.0
# The whole run (both servers, after any Synapse install) ends within RUN_BUDGET_SECONDS;
# each server gets a share of what is left, by weight (Synapse is the slower to fill).
RUN_BUDGET_SECONDS = 540.0
WEIGHTS = {"peyvand": 1.0, "synapse": 2.0, "peyvand-workers": 1.0}
# The deployment's name in results (``--workers``).
WORKERS = "peyvand-workers"
R = TypeVar("R")
SERVERS: dict[str, Callable[[Path, str | None], Server]] = {
    "peyvand": PeyvandServer,
    "synapse": SynapseServer,
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--postgres", action="store_true", help="both on one PostgreSQL cluster")
    parser.add_argument("--only", choices=sorted(SERVERS), help="run one server only")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check the setup")
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="N event writers sharing the rooms behind nginx against one process, both "
        "Peyvand, on PostgreSQL (issue 21)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    args = parser.parse_args(argv)
    names = [args.only] if args.only else list(SERVERS)
    if args.workers is not None:
        if args.workers < 2:
            parser.error("--workers needs at least 2 writers")
        SERVERS[WORKERS] = functools.partial(PeyvandDeployment, writers=args.workers)
        names, args.postgres = ["peyvand", WORKERS], True
    sizes = workloads.SMOKE if args.smoke else workloads.FULL
    if "synapse" in names:
        ensure_synapse()
    started = time.monotonic()
    results: dict[str, report.ServerResult] = {}
    with _databases(args.postgres) as new_database:
        for index, name in enumerate(names):
            left = RUN_BUDGET_SECONDS - (time.monotonic() - started)
            weights = [WEIGHTS[n] for n in names[index:]]
            budget = left * weights[0] / sum(weights)
            log(f"==> {name} ({'postgres' if args.postgres else 'sqlite'}), {budget:.0f} s")
            results[name] = _measure(name, new_database(), sizes, budget)
    if args.workers is not None:
        summary = report.build(results.get(WORKERS), results.get("peyvand"), report.WORKER_TARGETS)
        columns = (f"{args.workers} writers", "one process")
    else:
        summary = report.build(results.get("peyvand"), results.get("synapse"))
        columns = ("Peyvand", "Synapse")
    document = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": "postgres" if args.postgres else "sqlite",
        "sizes": _sizes(sizes),
        "machine": machine(),
        "commit": _git("rev-parse", "HEAD"),
        "servers": {name: result.to_json() for name, result in results.items()},
        **summary,
        "seconds": round(time.monotonic() - started, 1),
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"{stamp}-{document['database']}.json"
    report.write_json(path, document)
    print(report.table(summary, columns))
    print(f"\n{document['database']}, {document['seconds']} s; JSON: {path}")
    return 0


def _measure(
    name: str, database_url: str | None, sizes: workloads.Sizes, budget: float
) -> report.ServerResult:
    stop_by = time.perf_counter() + budget
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    server = SERVERS[name](data_dir, database_url)
    started = time.monotonic()
    server.start()
    sampler = procstat.Sampler(server.pids)
    try:
        sampler.start()
        time.sleep(IDLE_SETTLE_SECONDS)
        idle = procstat.tree_rss_bytes(server.pids)
        log(
            f"  started in {time.monotonic() - started:.1f} s; idle RSS {idle / report.MIB:.0f} MiB"
        )
        figures = _run_workloads(server, sizes, stop_by)
        sampler.stop()
        return report.ServerResult(
            name=name,
            version=server.version(),
            figures=figures,
            rss_idle_bytes=idle,
            rss_peak_bytes=sampler.peak_bytes,
            seconds=round(time.monotonic() - started, 1),
        )
    except BaseException:
        log(f"  {name} failed; the last lines of its log:\n{server.tail()}")
        raise
    finally:
        sampler.stop()
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _run_workloads(server: Server, sizes: workloads.Sizes, stop_by: float) -> workloads.Figures:
    pids = server.pids
    # Stopping the server takes some of the budget too.
    clock = workloads.Clock(stop_by - 15.0)

    async def go() -> workloads.Figures:
        async with new_session() as session:
            client = MatrixClient(session, server.base_url)
            return await asyncio.wait_for(
                workloads.run_all(
                    client,
                    sizes,
                    prefix=f"bench{uuid.uuid4().hex[:8]}",
                    clock=clock,
                    cpu=lambda: procstat.tree_cpu_seconds(pids),
                    log=log,
                ),
                max(1.0, stop_by - time.perf_counter()),
            )

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(go())


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop for the client when installed (it is a Peyvand dependency): less client CPU."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_bounded(work: Coroutine[Any, Any, R], clock: workloads.Clock) -> R:
    """``work`` on a new event loop, cancelled when ``clock`` runs out (given 1 s at least)."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(asyncio.wait_for(work, max(1.0, clock.stop_by - time.perf_counter())))


def measure_each(
    names: list[str],
    postgres: bool,
    budget: float,
    measure: Callable[[str, str | None], R],
) -> dict[str, R]:
    """``measure(name, database_url)`` for each server in turn, each on a fresh database."""
    database = "postgres" if postgres else "sqlite"
    results: dict[str, R] = {}
    with _databases(postgres) as new_database:
        for name in names:
            log(f"==> {name} ({database}), at most {budget:.0f} s")
            results[name] = measure(name, new_database())
    return results


def publish(
    out: Path,
    prefix: str,
    *,
    benchmark: str,
    database: str,
    sizes: dict[str, Any],
    servers: dict[str, Any],
    summary: dict[str, Any],
    started: float,
    cpus: dict[str, list[int]] | None = None,
) -> None:
    """The figures as JSON to ``out/<prefix>-<timestamp>-<database>.json`` (with the machine,
    the CPUs the servers and the client were placed on, if they were (``bench.cpus``), the
    commit and the seconds since ``started``), the table to stdout."""
    document = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "benchmark": benchmark,
        "database": database,
        "sizes": sizes,
        "machine": machine(),
        "cpus": cpus,
        "commit": _git("rev-parse", "HEAD"),
        "servers": servers,
        **summary,
        "seconds": round(time.monotonic() - started, 1),
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"{prefix}-{stamp}-{database}.json"
    report.write_json(path, document)
    print(report.table(summary))
    placed = (
        f"; server on CPUs {cpus['server']}, client on {cpus['client']}"
        + (f", database on {cpus['database']}" if "database" in cpus else "")
        if cpus
        else ""
    )
    print(f"\n{database}, {document['seconds']} s{placed}; JSON: {path}")


@contextmanager
def _databases(postgres: bool) -> Iterator[Callable[[], str | None]]:
    """A factory of fresh database URLs: ``None`` (SQLite) or a new PostgreSQL database."""
    if not postgres:
        yield lambda: None
        return
    sys.path.insert(0, str(REPO / "tests"))  # the test harness's throwaway cluster
    cluster: Any = importlib.import_module("harness.postgres").PostgresCluster.start()
    try:
        # initdb --no-locale -E UTF8: C collation and ctype, as Synapse requires.
        yield lambda: str(cluster.create_database("bench"))
    finally:
        cluster.destroy()


def _sizes(sizes: workloads.Sizes) -> dict[str, Any]:
    return {name: getattr(sizes, name) for name in sizes.__slots__}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        mem_kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
    except (OSError, StopIteration):
        mem_kib = 0
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=False
    )
    return result.stdout.strip() or "unknown"
