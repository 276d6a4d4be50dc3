"""Resource use of a process and its descendants, read from /proc (Linux only).

RSS is the sum of ``VmRSS`` over the live tree. CPU is ``utime + stime`` of the live tree
plus ``cutime + cstime`` (children that already exited and were waited for), in seconds.
``Sampler`` polls the tree's RSS on a thread and keeps the peak.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

_PROC = Path("/proc")
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant of it."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 if it is gone)."""
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss_bytes(root: int | Sequence[int]) -> int:
    """Summed RSS of ``root`` (or of each root) and its descendants."""
    roots = [root] if isinstance(root, int) else root
    return sum(rss_bytes(pid) for top in roots for pid in process_tree(top))


def tree_cpu_seconds(root: int | Sequence[int]) -> float:
    """CPU time (user + system) used so far by ``root``'s tree (or each root's), reaped
    children included."""
    roots = [root] if isinstance(root, int) else root
    ticks = 0
    for pid in (pid for top in roots for pid in process_tree(top)):
        fields = _stat_fields(pid)
        if fields is not None:
            # After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
            ticks += sum(int(value) for value in fields[11:15])
    return ticks / _TICKS_PER_SECOND


class Sampler:
    """Samples the tree's RSS every ``interval`` seconds on a daemon thread; keeps the peak."""

    def __init__(self, root: int | Sequence[int], interval: float = 0.1) -> None:
        self._root = root
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak_bytes = 0
        self.samples = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.peak_bytes = max(self.peak_bytes, tree_rss_bytes(self._root))
            self.samples += 1
            self._stop.wait(max(0.0, self._interval - (time.monotonic() - started)))
