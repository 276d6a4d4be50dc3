"""``bench.sliding_sync`` at its smoke sizes against the session's Peyvand: every room count
yields first responses and wakes, the held connections are all held, and the side-by-side
rows come out of them. Synapse is neither installed nor run here (``python -m
bench.sliding_sync`` does that)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from harness.server import HomeserverProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: bench/

from bench.sliding_workloads import SMOKE, WINDOW_END
from bench.workloads import Clock

from bench import report, sliding_sync


async def test_sliding_sync_at_smoke_sizes(homeserver: HomeserverProcess) -> None:
    sizes = SMOKE
    result = sliding_sync.SlidingResult("peyvand", "0", [])
    await sliding_sync.run_all(homeserver.base_url, homeserver.pid, sizes, Clock(), result)

    assert [f.requested_rooms for f in result.sizes] == list(sizes.rooms)
    for figures in result.sizes:
        rooms = figures.requested_rooms
        assert (figures.rooms, figures.truncated) == (rooms, False)
        assert (figures.first_requests, figures.first_errors) == (sizes.first_requests, 0)
        assert figures.list_count == rooms
        assert figures.window_rooms == min(rooms, WINDOW_END + 1)
        assert 0 < figures.first_p50_ms <= figures.first_p99_ms < 10_000
        assert figures.first_bytes > 0
        assert (figures.wakes, figures.wake_missing) == (sizes.wakes, 0)
        assert 0 <= figures.wake_p50_ms <= figures.wake_p99_ms < 10_000
        assert 0 < figures.wake_from_request_p50_ms <= figures.wake_from_request_p99_ms

    last = result.sizes[-1]
    assert last.connections_requested == sizes.connections
    assert (last.connections_held, last.connection_errors) == (sizes.connections, 0)
    assert last.rss_before_bytes > 10 * report.MIB and last.rss_held_bytes > 0
    assert last.cpu_open_seconds >= 0 and last.cpu_idle_seconds >= 0
    assert all(f.connections_requested == 0 for f in result.sizes[:-1])

    summary = sliding_sync.summarize(result, None, sizes)
    by_key = {row["key"]: row for row in summary["rows"]}
    top = sizes.rooms[-1]
    assert by_key[f"r{top}_first_p50"]["peyvand"] == last.first_p50_ms
    assert by_key["held"]["peyvand"] == sizes.connections
    assert math.isnan(by_key[f"r{top}_first_p50"]["synapse"])
    assert [t["pass"] for t in summary["targets"]] == [False] * 4  # no Synapse figures
    assert "first response (20-room window) p50 | ms |" in report.table(summary)
    assert "first_p50" in str(result.to_json()["sizes"][0])
