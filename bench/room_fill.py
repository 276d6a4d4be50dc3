"""``python -m bench.room_fill [--members N] [--concurrency C] [--budget S]``: how fast
one room fills up through the API (issue 15: the big-room set-up must not cost O(members)
per join).

A fresh Peyvand on SQLite in a temporary directory (removed after), password hashing at
bcrypt cost 4 as in ``bench.rooms``. One user creates a public room; N more register,
then join it, at most C requests at once. Registrations and joins per second are printed
for each slice of the run (1,000 at a time unless ``--report-every``), so joins per second
at the end against the start show whether a join's cost grows with the room. The
server's pid is printed first, for ``py-spy record -p``. Everything is bounded by
``--budget`` seconds; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from bench.client import Account, MatrixClient, new_session
from bench.run import _loop_factory
from bench.servers import PeyvandServer
from bench.workloads import bounded_map

T = TypeVar("T")
R = TypeVar("R")
BCRYPT_ROUNDS = 4


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _in_slices(
    what: str,
    items: Sequence[T],
    work: Callable[[T], Awaitable[R]],
    concurrency: int,
    every: int,
    deadline: float,
) -> list[R]:
    """``work`` over ``items`` a slice of ``every`` at a time, logging each slice's rate."""
    results: list[R] = []
    started = time.perf_counter()
    for start in range(0, len(items), every):
        if time.perf_counter() > deadline:
            log(f"{what}: budget spent after {len(results)}")
            break
        chunk = items[start : start + every]
        t0 = time.perf_counter()
        results += await bounded_map(chunk, work, concurrency, deadline)
        seconds = time.perf_counter() - t0
        log(
            f"{what} {start + 1}-{start + len(chunk)}: {len(chunk) / seconds:.1f}/s "
            f"({seconds:.1f} s; {time.perf_counter() - started:.1f} s in all)"
        )
    return results


async def fill(
    server: PeyvandServer, members: int, concurrency: int, every: int, budget: float
) -> None:
    deadline = time.perf_counter() + budget
    log(f"peyvand pid {server.pid}")
    async with new_session() as session:
        client = MatrixClient(session, server.base_url)
        creator = await client.register("fill-creator")
        room = await client.create_room(creator)
        names = [f"fill-{i}" for i in range(members)]
        accounts = await _in_slices(
            "register", names, client.register, concurrency, every, deadline
        )

        async def join(account: Account) -> None:
            await client.join(account, room)

        await _in_slices("join", accounts, join, concurrency, every, deadline)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.room_fill", description=__doc__)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--report-every", type=int, default=1000)
    parser.add_argument("--budget", type=float, default=3000.0, help="seconds for the run")
    args = parser.parse_args(argv)
    if args.members < 1 or args.concurrency < 1 or args.report_every < 1:
        parser.error("--members, --concurrency and --report-every must be positive")
    data_dir = Path(tempfile.mkdtemp(prefix="bench-room-fill-"))
    server = PeyvandServer(data_dir, bcrypt_rounds=BCRYPT_ROUNDS)
    try:
        server.start()
        work = fill(server, args.members, args.concurrency, args.report_every, args.budget)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(asyncio.wait_for(work, args.budget + 60.0))
    except BaseException:
        log(f"peyvand failed or the run timed out; its log ends:\n{server.tail()}")
        raise
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
