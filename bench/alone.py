"""Running a Peyvand-only benchmark (``bench.presence``, ``bench.idle_syncs``): a fresh
server on SQLite in a temporary data directory, the work bounded by a time budget, the
server stopped and its directory removed whatever happens; then the figures written as
``bench/results/<kind>-<timestamp>-sqlite.json`` beside the machine and the commit."""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.run import _git, _loop_factory, machine
from bench.servers import PeyvandServer


def run_on_fresh_peyvand(
    kind: str, budget_seconds: float, work: Callable[[PeyvandServer], Awaitable[None]]
) -> None:
    """Start a fresh Peyvand, run ``work`` against it within ``budget_seconds``, stop it.
    On failure (or timeout) the server's log tail goes to stderr before the error."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    server = PeyvandServer(data_dir)
    try:
        server.start()
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(asyncio.wait_for(work(server), budget_seconds))
    except BaseException:
        print(
            f"peyvand failed or the run timed out; its log ends:\n{server.tail()}",
            file=sys.stderr,
            flush=True,
        )
        raise
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def write_figures(out: Path, kind: str, benchmark: str, figures: Any) -> Path:
    """The figures (a dataclass) with timestamp, machine and commit, as JSON in ``out``."""
    document = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "benchmark": benchmark,
        "database": "sqlite",
        "machine": machine(),
        "commit": _git("rev-parse", "HEAD"),
        "figures": asdict(figures),
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"{kind}-{stamp}-sqlite.json"
    report.write_json(path, document)
    return path
