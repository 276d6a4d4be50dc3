"""``python -m bench.idle_syncs [--connections N] [--users U] [--budget S]``: the memory of
idle long-polling ``/sync`` connections (issue 15, "Memory").

1. A fresh Peyvand on SQLite (``bench.servers.PeyvandServer``); U users (default 10)
   register and each syncs once for a ``since`` token. The open-file limit of this process
   (and so of the server it starts) is raised to its hard limit first.
2. The server's RSS is sampled idle (median of a few samples after it settles).
3. N long-polls (default 10,000) ``GET /sync?since=...&timeout=290000`` are opened from this
   one client process, each on its own keep-alive connection, in steps of a quarter of N;
   after each step, once the server holds every connection (its socket count from
   ``/proc/<pid>/fd``) and has settled, its RSS is sampled again. Nothing is sent, so every
   poll stays asleep: this is the cost of waiting clients alone. The server's CPU over a
   few seconds with all of them waiting is measured too.
4. The polls are dropped (the client closes its connections) and RSS is sampled once more.

Reported: RSS idle, at each step, after; MiB per 1,000 waiting connections (from idle to
N). Prints a Markdown table and writes ``bench/results/idle-syncs-<timestamp>-sqlite.json``.
Bounded: ``--budget`` seconds overall (default 420, under the polls' own timeout), each
wait by its own deadline; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench import procstat
from bench.alone import run_on_fresh_peyvand, write_figures
from bench.client import CLIENT_V3, Account, MatrixClient, new_session
from bench.run import RESULTS_DIR

POLL_MS = 290_000  # under the server's 5-minute cap; the run ends well before
STEPS = 4
OPEN_BATCH = 100  # connections opened before waiting for the server to hold them
SETTLE_SECONDS = 3.0
SAMPLES = 5
CONNECT_DEADLINE_SECONDS = 60.0  # per batch, for the server to hold its connections
CPU_WINDOW_SECONDS = 5.0
MIB = 1024 * 1024


@dataclass
class Figures:
    connections: int
    users: int
    rss_idle_mib: float = 0.0
    steps: list[tuple[int, float]] = field(default_factory=list)  # (held, RSS MiB)
    rss_after_mib: float = 0.0
    mib_per_1000: float = 0.0
    cpu_seconds_idle_window: float = 0.0
    open_seconds: float = 0.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle_syncs", description=__doc__)
    parser.add_argument("--connections", type=int, default=10_000, help="long-polls to hold")
    parser.add_argument("--users", type=int, default=10, help="users the polls belong to")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for the run")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.connections < STEPS or args.users < 1:
        parser.error(f"--connections must be at least {STEPS}, --users at least 1")
    _raise_fd_limit(args.connections)
    figures = Figures(args.connections, args.users)
    run_on_fresh_peyvand(
        "idle-syncs", args.budget, lambda server: run(server.base_url, server.pid, figures)
    )
    path = write_figures(args.out, "idle-syncs", "idle long-polling syncs", figures)
    print(table(figures))
    print(f"\nJSON: {path}")
    return 0 if figures.steps and figures.steps[-1][0] >= args.connections else 1


def _raise_fd_limit(connections: int) -> None:
    """Soft open-file limit up to the hard one; the server child inherits it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = connections + 1024
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"the hard open-file limit ({hard}) is below {needed}: raise it")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _sockets(pid: int) -> int:
    """How many sockets ``pid`` has open (its listener among them)."""
    count = 0
    fd_dir = Path(f"/proc/{pid}/fd")
    for entry in fd_dir.iterdir():
        try:
            if os.readlink(entry).startswith("socket:"):
                count += 1
        except OSError:
            continue  # closed meanwhile
    return count


async def _settled_rss_mib(pid: int) -> float:
    """The median of a few RSS samples taken after the server settles."""
    await asyncio.sleep(SETTLE_SECONDS)
    samples = []
    for _ in range(SAMPLES):
        samples.append(procstat.tree_rss_bytes(pid) / MIB)
        await asyncio.sleep(0.2)
    return round(statistics.median(samples), 1)


async def _poll(
    session: aiohttp.ClientSession, base_url: str, account: Account, since: str
) -> None:
    """One long-poll; it is cancelled before the server would answer."""
    async with session.get(
        f"{base_url}{CLIENT_V3}/sync",
        params={"since": since, "timeout": str(POLL_MS)},
        headers={"Authorization": f"Bearer {account.access_token}"},
        timeout=aiohttp.ClientTimeout(total=POLL_MS / 1000 + 30),
    ) as response:
        await response.read()


async def run(base_url: str, pid: int, figures: Figures) -> None:
    """Measure ``figures.connections`` long-polls against the server at ``base_url``,
    whose process is ``pid``, filling in ``figures``."""
    prefix = f"i{uuid.uuid4().hex[:6]}"
    async with new_session() as setup:
        client = MatrixClient(setup, base_url)
        accounts = [await client.register(f"{prefix}-{i}") for i in range(figures.users)]
        tokens = []
        for account in accounts:
            reply = await client.sync(account)
            tokens.append(str(reply.body["next_batch"]))
    figures.rss_idle_mib = await _settled_rss_mib(pid)
    base_sockets = _sockets(pid)
    log(f"idle RSS {figures.rss_idle_mib} MiB, {base_sockets} sockets")
    polls: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    async with new_session() as session:
        try:
            for step in range(1, STEPS + 1):
                target = figures.connections * step // STEPS
                while len(polls) < target:
                    # A batch at a time, so the listen backlog (128) does not overflow.
                    for i in range(len(polls), min(target, len(polls) + OPEN_BATCH)):
                        account, since = accounts[i % len(accounts)], tokens[i % len(tokens)]
                        poll = _poll(session, base_url, account, since)
                        polls.append(asyncio.create_task(poll))
                    await _wait_for_sockets(pid, base_sockets + len(polls))
                held = _sockets(pid) - base_sockets
                rss = await _settled_rss_mib(pid)
                figures.steps.append((held, rss))
                log(f"{held} connections held: RSS {rss} MiB")
            figures.open_seconds = round(time.perf_counter() - started, 1)
            ended = [task for task in polls if task.done()]
            if ended:
                raise RuntimeError(f"{len(ended)} long-polls ended early: {ended[0]!r}")
            cpu_before = procstat.tree_cpu_seconds(pid)
            await asyncio.sleep(CPU_WINDOW_SECONDS)
            figures.cpu_seconds_idle_window = round(procstat.tree_cpu_seconds(pid) - cpu_before, 3)
        finally:
            for task in polls:
                task.cancel()
            await asyncio.gather(*polls, return_exceptions=True)
    held, rss = figures.steps[-1]
    figures.mib_per_1000 = round((rss - figures.rss_idle_mib) / held * 1000, 2)
    await _wait_for_sockets(pid, base_sockets, fewer=True)
    figures.rss_after_mib = await _settled_rss_mib(pid)


async def _wait_for_sockets(pid: int, count: int, *, fewer: bool = False) -> None:
    """Until the server holds at least (or, with ``fewer``, at most) ``count`` sockets."""
    deadline = time.monotonic() + CONNECT_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        held = _sockets(pid)
        if (held <= count) if fewer else (held >= count):
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"the server holds {_sockets(pid)} sockets, waited for {count}")


def table(f: Figures) -> str:
    rows = [("RSS idle (MiB)", f"{f.rss_idle_mib}")]
    rows += [(f"RSS with {held:,} long-polls waiting (MiB)", f"{rss}") for held, rss in f.steps]
    rows += [
        ("MiB per 1,000 waiting long-polls", f"{f.mib_per_1000}"),
        (
            f"server CPU over {CPU_WINDOW_SECONDS:.0f} s with all waiting (s)",
            f"{f.cpu_seconds_idle_window}",
        ),
        ("RSS after the client hung up (MiB)", f"{f.rss_after_mib}"),
        ("time to open them all (s)", f"{f.open_seconds}"),
    ]
    lines = ["| measure | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
