"""CPUs of their own for the server under test and for the bench's client.

With two CPUs or more, ``split`` gives the server the first half of the CPUs the bench may
use (at least one) and the bench process, the client, the rest: the server is started
under ``taskset`` (every thread it starts inherits its CPUs) and the bench pins itself
(``pin_client``, before it starts a thread or a child: a PostgreSQL cluster it starts
runs on the client's CPUs). Both servers of a run get the same CPUs.

Why: a latency measured from the client counts what runs on the server's CPU. On the
benchmarks' 2-vCPU machine the kernel packs runnable tasks onto one vCPU, so the client,
woken by a response, preempts the server inside the ``write`` of that response and does
its own work with it there: uvloop's ``write`` of a send's 200 took 0.32 ms at p50 with
the two sharing, 0.06 ms with them apart, and the woken sliding sync that follows it
computed only after (``docs/benchmarks.md``, "The wake, a fourth look"). Apart, both
servers answer faster. ``--no-pin`` keeps the old placement, for comparison.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CpuSplit:
    server: tuple[int, ...]
    client: tuple[int, ...]

    def taskset(self, command: list[str]) -> list[str]:
        """``command`` run on the server's CPUs."""
        return ["taskset", "--cpu-list", ",".join(map(str, self.server)), *command]

    def to_json(self, *, database: bool = False) -> dict[str, list[int]]:
        """The placement; ``database``: a database cluster the bench started after
        ``pin_client`` (``--postgres``), on the client's CPUs."""
        placed = {"server": list(self.server), "client": list(self.client)}
        return placed | {"database": list(self.client)} if database else placed


def split() -> CpuSplit | None:
    """The server's CPUs and the client's, or None when there is one CPU to use or no
    ``taskset`` (util-linux) to place the server with."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return None
    half = len(cpus) // 2
    return CpuSplit(tuple(cpus[:half]), tuple(cpus[half:]))


def pin_client(cpus: CpuSplit) -> None:
    """The bench process (and every thread it starts after this) on the client's CPUs."""
    os.sched_setaffinity(0, cpus.client)
