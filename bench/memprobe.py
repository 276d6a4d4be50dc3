"""``python bench/memprobe.py REPORT [--tracemalloc] [--release] [--census] -- PEYVAND-ARGS``:
Peyvand with a memory probe.

Runs ``peyvand PEYVAND-ARGS`` in this process, plus one thread that waits for SIGUSR1 and
then appends one JSON line to REPORT: the process's memory by kind (``/proc/self/smaps``:
the brk heap, other anonymous mappings, files), CPython's small-object allocator (arenas
in use, bytes in free blocks, from ``sys._debugmallocstats``), SQLite's own allocations
(``sqlite3_memory_used``), the count of objects the
garbage collector tracks and, with ``--tracemalloc``, the Python allocations alive now by
line against the first report's. With ``--release`` each report then runs a full
collection and glibc's ``malloc_trim`` and reports again: what was garbage in cycles (and
the kinds of objects in those cycles, the first thing to read when it is many: each is a
reference cycle the code leaves behind), and what the allocators held free (this changes
the run it measures). With ``--census``, the objects the collector tracks counted by
type, with their shallow sizes. Bench tooling only: the server's code knows nothing of it.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import re
import signal
import sys
import tempfile
import threading
import tracemalloc
import types
from pathlib import Path
from typing import Any

from peyvand.cli.main import main as peyvand_main

TOP_LINES = 25
_OBMALLOC_FIELDS = {
    "arenas_allocated": re.compile(r"# arenas allocated current\s*=\s*([\d,]+)"),
    "arenas_highwater": re.compile(r"# arenas highwater mark\s*=\s*([\d,]+)"),
    "bytes_in_free_blocks": re.compile(r"# bytes in available blocks\s*=\s*([\d,]+)"),
    "bytes_in_used_blocks": re.compile(r"# bytes in allocated blocks\s*=\s*([\d,]+)"),
}


def smaps_kib() -> dict[str, int]:
    """Resident KiB by kind of mapping: ``heap`` (brk), ``anon`` (other anonymous, which
    holds CPython's arenas, thread arenas and stacks), ``file`` (code and data of
    libraries and extension modules)."""
    totals = {"heap": 0, "anon": 0, "file": 0}
    kind = "anon"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):
            name = fields[5] if len(fields) > 5 else ""
            kind = "heap" if name == "[heap]" else "file" if name.startswith("/") else "anon"
        elif fields[0] == "Rss:":
            totals[kind] += int(fields[1])
    return totals


def sqlite_bytes(library: ctypes.CDLL | None) -> int:
    """Memory SQLite holds in this process (page caches, schemas, prepared statements):
    ``sqlite3_memory_used()`` of the library the ``sqlite3`` module loaded; -1 if unknown."""
    if library is None:
        return -1
    used: int = library.sqlite3_memory_used()
    return used


def load_sqlite() -> ctypes.CDLL | None:
    """The SQLite library, loaded once (each ``CDLL`` leaves a reference cycle)."""
    try:
        library = ctypes.CDLL("libsqlite3.so.0")
    except OSError:
        return None
    library.sqlite3_memory_used.restype = ctypes.c_int64
    return library


def garbage_census() -> tuple[int, list[tuple[str, int]]]:
    """A full collection that keeps what it finds: how many objects were garbage in
    reference cycles, and their kinds, most numerous first (functions, frames and
    coroutines by their qualified names, to tell whose cycles they are)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
    finally:
        gc.set_debug(0)
    counts: dict[str, int] = {}
    for found in gc.garbage:
        name = type(found).__qualname__
        code = getattr(found, "f_code", None) or getattr(found, "cr_code", None)
        if code is not None:
            name += " " + code.co_qualname
        elif isinstance(found, types.FunctionType):
            name += " " + found.__qualname__
        counts[name] = counts.get(name, 0) + 1
    found_count = len(gc.garbage)
    gc.garbage.clear()
    return found_count, sorted(counts.items(), key=lambda item: -item[1])[:TOP_LINES]


def type_census() -> list[tuple[str, int, int]]:
    """The objects the collector tracks by type: (type, count, shallow bytes), largest
    first."""
    totals: dict[str, list[int]] = {}
    for tracked in gc.get_objects():
        entry = totals.setdefault(type(tracked).__qualname__, [0, 0])
        entry[0] += 1
        entry[1] += sys.getsizeof(tracked)
    ranked = sorted(totals.items(), key=lambda item: -item[1][1])[:TOP_LINES]
    return [(name, count, size) for name, (count, size) in ranked]


def obmalloc_stats() -> dict[str, int]:
    """CPython's small-object allocator, parsed from ``sys._debugmallocstats`` (which
    writes to the C-level stderr, so it is captured through a temporary file)."""
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        try:
            os.dup2(capture.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace")
    stats = {}
    for name, pattern in _OBMALLOC_FIELDS.items():
        match = pattern.search(text)
        stats[name] = int(match.group(1).replace(",", "")) if match else -1
    return stats


class Probe:
    """Answers each SIGUSR1 with one report line."""

    def __init__(self, report: Path, *, release: bool, census: bool) -> None:
        self._report = report
        self._release = release
        self._census = census
        self._sqlite = load_sqlite()
        self._libc = ctypes.CDLL("libc.so.6")
        self._first: tracemalloc.Snapshot | None = None

    def run(self) -> None:
        while True:
            signal.sigwait({signal.SIGUSR1})
            document = self.measure()
            if self._census:
                document["types"] = type_census()
            if self._release:
                document["collected"], document["garbage"] = garbage_census()
                document["after_collect"] = self.measure()
                self._libc.malloc_trim(0)
                document["after_trim"] = self.measure()
            with self._report.open("a", encoding="utf-8") as out:
                out.write(json.dumps(document) + "\n")

    def measure(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "smaps_kib": smaps_kib(),
            "obmalloc": obmalloc_stats(),
            "sqlite_bytes": sqlite_bytes(self._sqlite),
            "gc_objects": len(gc.get_objects()),
            "threads": threading.active_count(),
        }
        if tracemalloc.is_tracing():
            current, peak = tracemalloc.get_traced_memory()
            snapshot = tracemalloc.take_snapshot()
            if self._first is None:
                self._first = snapshot
            grown = snapshot.compare_to(self._first, "lineno")[:TOP_LINES]
            document["traced"] = {"current": current, "peak": peak}
            document["grown_since_first"] = [
                [str(stat.traceback[0]), stat.size_diff, stat.count_diff] for stat in grown
            ]
            tracemalloc.reset_peak()
        return document


def main() -> int:
    report, *rest = sys.argv[1:]
    split = rest.index("--")
    options, peyvand_args = set(rest[:split]), rest[split + 1 :]
    if options - {"--tracemalloc", "--release", "--census"}:
        raise SystemExit(f"unknown options: {sorted(options)}")
    if "--tracemalloc" in options:
        tracemalloc.start(1)
    # Blocked here, before any thread starts, so that every thread inherits the mask and
    # only the probe's sigwait receives it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    threading.Thread(
        target=Probe(
            Path(report), release="--release" in options, census="--census" in options
        ).run,
        name="memprobe",
        daemon=True,
    ).start()
    return peyvand_main(peyvand_args)


if __name__ == "__main__":
    raise SystemExit(main())
