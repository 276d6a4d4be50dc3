"""``python -m bench.profile``: where Peyvand's time goes in each workload.

Starts a fresh Peyvand (SQLite), runs the bench's workloads one by one with ``py-spy record``
attached to the server for each (``pip install py-spy``), and writes one collapsed-stack file
per workload to ``bench/results/profile-<timestamp>/`` (open them with speedscope or
flamegraph.pl), plus a summary of the hottest frames and the server's RSS after each phase.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import procstat, workloads
from bench.client import MatrixClient, new_session
from bench.report import MIB
from bench.servers import BENCH_DIR, PeyvandServer

TOP = 25


def main() -> int:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 1
    out = BENCH_DIR / "results" / f"profile-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    out.mkdir(parents=True)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    server = PeyvandServer(data_dir)
    server.start()
    try:
        asyncio.run(_profile(server, py_spy, out))
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"collapsed stacks in {out}")
    return 0


async def _profile(server: PeyvandServer, py_spy: str, out: Path) -> None:
    sizes, clock = workloads.FULL, workloads.Clock()
    async with new_session() as session:
        client = MatrixClient(session, server.base_url)
        count = sizes.users + 1
        accounts = await workloads.register_users(
            client, f"prof{uuid.uuid4().hex[:6]}", count, sizes, clock
        )
        reader, users = accounts[0], accounts[1:]
        phases: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("1-sequential", lambda: workloads.sequential_sends(client, users[0], sizes, clock)),
            ("2-concurrent", lambda: workloads.concurrent_sends(client, users[:32], sizes, clock)),
            ("3-delivery", lambda: workloads.delivery(client, users, sizes, clock)),
            ("4-initial-sync", lambda: workloads.initial_sync(client, reader, sizes, clock)),
        ]
        for name, run in phases:
            path = out / f"{name}.txt"
            spy = await asyncio.create_subprocess_exec(
                py_spy, "record", "-p", str(server.pid), "-r", "200", "-f", "raw",
                "-o", str(path), "--nonblocking",
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            await asyncio.sleep(1.0)
            figures = await run()
            spy.send_signal(signal.SIGINT)
            await asyncio.wait_for(spy.wait(), 60)
            rss = procstat.tree_rss_bytes(server.pid) / MIB
            print(f"== {name}: RSS {rss:.0f} MiB; {figures}")
            _summarise(path)


def _summarise(path: Path) -> None:
    """Self and inclusive share of the hottest frames in a collapsed-stack file."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    if not path.exists():
        print("   (no profile written)")
        return
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"   {total} samples; inclusive:")
    for frame, count in inclusive.most_common(TOP):
        print(f"   {100 * count / total:5.1f}%  {frame}")
    print("   self:")
    for frame, count in own.most_common(TOP):
        print(f"   {100 * count / total:5.1f}%  {frame}")


if __name__ == "__main__":
    raise SystemExit(main())
