"""``python -m bench.memory [--tracemalloc] [--release] [--census]``: where Peyvand's memory
goes on the standard benchmark.

Starts a fresh Peyvand (SQLite) under ``bench.memprobe`` and runs the standard workloads
(``bench.workloads.FULL``) one phase at a time. For each phase it prints the peak RSS of
the server's tree while the phase ran (sampled every 100 ms), the RSS at its end, and the
probe's report taken then: resident memory by kind (brk heap, other anonymous, files),
CPython's arenas and the bytes free inside them, the objects the collector tracks, and
with ``--tracemalloc`` the lines whose live allocations grew most since start-up (tracing
roughly doubles the memory it watches: read its figures as shares, not as RSS), with
``--release`` the kinds of objects found in reference cycles, and with ``--census`` the
tracked objects by type. RSS counts the pages of shared libraries too, which the kernel
may drop under memory pressure from other processes: "heap" and "anon" are the figures
to compare between runs on a shared machine.
Bounded by ``BUDGET_SECONDS``; the server is stopped and its directory removed whatever
happens. The side-by-side figure stays ``python -m bench``'s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import procstat, workloads
from bench.client import Account, MatrixClient, new_session
from bench.report import MIB
from bench.run import _loop_factory
from bench.servers import PeyvandServer

BUDGET_SECONDS = 600.0
SETTLE_SECONDS = 3.0
PROBE_TIMEOUT_SECONDS = 30.0
# Run by path: the server runs in its data directory, where ``bench`` is not importable.
PROBE = Path(__file__).with_name("memprobe.py")


class ProbedPeyvand(PeyvandServer):
    """Peyvand run through ``bench.memprobe``, its reports in the data directory."""

    def __init__(self, data_dir: Path, *, tracemalloc: bool, release: bool, census: bool) -> None:
        super().__init__(data_dir)
        self._options = (
            ["--tracemalloc"] * tracemalloc + ["--release"] * release + ["--census"] * census
        )
        self.report_path = data_dir / "memprobe.jsonl"

    def command(self) -> list[str]:
        probe = [sys.executable, str(PROBE), str(self.report_path), *self._options]
        # super's command is [python, -m, peyvand, serve, ...]: keep what follows "peyvand".
        return [*probe, "--", *super().command()[3:]]

    def probe(self) -> dict[str, Any]:
        """Ask the probe for a report and wait (bounded) for its line."""
        count = self._report_lines()
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + PROBE_TIMEOUT_SECONDS
        while self._report_lines() == count:
            if time.monotonic() > deadline:
                raise TimeoutError("the memory probe did not answer")
            time.sleep(0.1)
        report: dict[str, Any] = json.loads(self.report_path.read_text().splitlines()[-1])
        return report

    def _report_lines(self) -> int:
        if not self.report_path.exists():
            return 0
        return len(self.report_path.read_text().splitlines())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--tracemalloc", action="store_true", help="trace Python allocations")
    parser.add_argument(
        "--release",
        action="store_true",
        help="after each report, collect garbage and malloc_trim, and report again",
    )
    parser.add_argument(
        "--census", action="store_true", help="count the tracked objects by type in each report"
    )
    args = parser.parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    server = ProbedPeyvand(
        data_dir, tracemalloc=args.tracemalloc, release=args.release, census=args.census
    )
    try:
        server.start()
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(asyncio.wait_for(_phases(server), BUDGET_SECONDS))
    except BaseException:
        print(f"failed; the server's log ends:\n{server.tail()}", file=sys.stderr, flush=True)
        raise
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


async def _phases(server: ProbedPeyvand) -> None:
    sizes, clock = workloads.FULL, workloads.Clock()
    await asyncio.sleep(SETTLE_SECONDS)
    _show("idle", None, server)
    async with new_session() as session:
        client = MatrixClient(session, server.base_url)
        count = max(sizes.users, sizes.concurrent_senders) + 1
        accounts: list[Account] = []

        async def register() -> None:
            accounts.extend(
                await workloads.register_users(
                    client, f"mem{uuid.uuid4().hex[:6]}", count, sizes, clock
                )
            )

        await _phase("register", register, server)
        reader, users = accounts[0], accounts[1:]
        phases: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("1 sequential", lambda: workloads.sequential_sends(client, users[0], sizes, clock)),
            (
                "2 concurrent",
                lambda: workloads.concurrent_sends(
                    client, users[: sizes.concurrent_senders], sizes, clock
                ),
            ),
            ("3 delivery", lambda: workloads.delivery(client, users[: sizes.users], sizes, clock)),
            ("4 initial sync", lambda: workloads.initial_sync(client, reader, sizes, clock)),
        ]
        for name, run in phases:
            await _phase(name, run, server)
    await asyncio.sleep(SETTLE_SECONDS)
    _show("client gone", None, server)


async def _phase(name: str, run: Callable[[], Awaitable[object]], server: ProbedPeyvand) -> None:
    sampler = procstat.Sampler(server.pid)
    sampler.start()
    try:
        await run()
    finally:
        sampler.stop()
    _show(name, sampler.peak_bytes, server)


def _show(name: str, peak_bytes: int | None, server: ProbedPeyvand) -> None:
    rss = procstat.tree_rss_bytes(server.pid) / MIB
    report = server.probe()
    peak = "" if peak_bytes is None else f"peak {peak_bytes / MIB:6.1f}  "
    print(f"== {name:<14} {peak}end {rss:6.1f} MiB | {_kinds(report)}", flush=True)
    if "collected" in report:
        print(f"   gc.collect() found {report['collected']:,}: {_kinds(report['after_collect'])}")
        print(f"   then malloc_trim(0): {_kinds(report['after_trim'])}")
        for kind, count in report["garbage"]:
            print(f"   {count:9,d} in cycles  {kind}")
    for kind, count, size in report.get("types", []):
        print(f"   {count:9,d} {size / 1024:9.1f} KiB  {kind}")
    if "traced" in report:
        traced = report["traced"]
        print(
            f"   traced now {traced['current'] / MIB:.1f} MiB, peak since last "
            f"{traced['peak'] / MIB:.1f} MiB; grown since idle:"
        )
        for where, size, count in report["grown_since_first"]:
            print(f"   {size / 1024:9.1f} KiB {count:+8d}  {where}")


def _kinds(report: dict[str, Any]) -> str:
    """One probe report on one line."""
    kib, obmalloc = report["smaps_kib"], report["obmalloc"]
    resident = sum(kib.values()) / 1024
    return (
        f"RSS {resident:5.1f}: heap {kib['heap'] / 1024:5.1f} anon {kib['anon'] / 1024:5.1f} "
        f"file {kib['file'] / 1024:5.1f} | arenas {obmalloc['arenas_allocated']}, "
        f"used {obmalloc['bytes_in_used_blocks'] / MIB:.1f} MiB, "
        f"free {obmalloc['bytes_in_free_blocks'] / MIB:.1f} | "
        f"SQLite {report['sqlite_bytes'] / MIB:.1f} MiB | "
        f"objects {report['gc_objects']:,} | threads {report['threads']}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
