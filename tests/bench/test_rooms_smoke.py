"""``bench.rooms`` at its smoke sizes against the session's Peyvand: the hot room and the
big room at each size produce every figure, and the side-by-side rows come out of them.
Synapse is neither installed nor run here (``python -m bench.rooms`` does that)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from harness.server import HomeserverProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: bench/

from bench.room_workloads import SMOKE, HotRoomFigures
from bench.workloads import Clock

from bench import report, rooms


async def test_rooms_at_smoke_sizes(homeserver: HomeserverProcess) -> None:
    sizes = SMOKE
    result = rooms.RoomsResult("peyvand", "0", HotRoomFigures(), [])
    await rooms.run_all(homeserver.base_url, homeserver.pid, sizes, Clock(), result)

    assert result.registered == max(sizes.hot_members, *sizes.big_members) + len(sizes.big_members)
    hot = result.hot
    requested = sizes.hot_senders * sizes.hot_sends_per_sender
    assert (hot.members, hot.senders, hot.requested) == (sizes.hot_members, 3, requested)
    assert (hot.sent, hot.send_errors, hot.truncated) == (requested, 0, False)
    # Every other member receives each message, or skips it through a limited timeline.
    assert hot.deliveries + hot.skipped == requested * (sizes.hot_members - 1)
    assert (hot.missing, hot.sync_errors) == (0, 0)
    assert 0 < hot.send_p50_ms <= hot.send_p99_ms
    assert 0 <= hot.delivery_p50_ms <= hot.delivery_p99_ms < 5000
    assert 0 < hot.from_request_p50_ms <= hot.from_request_p99_ms < 5000
    assert 0 <= hot.cpu_seconds_per_1000_messages < 1000

    assert [f.requested_members for f in result.big] == list(sizes.big_members)
    for big in result.big:
        assert (big.members, big.truncated) == (big.requested_members, False)
        assert big.syncing == min(big.members, sizes.big_syncing)
        assert big.messages == sizes.big_messages
        assert big.deliveries + big.skipped == sizes.big_messages * (big.syncing - 1)
        assert big.missing == 0
        assert 0 < big.from_request_p50_ms <= big.from_request_p99_ms < 5000
        assert big.cpu_messages == sizes.big_cpu_messages
        assert 0 <= big.cpu_ms_per_message < 1000
        assert big.members_p50_ms > 0 and big.joined_members_p50_ms > 0
        # /members carries whole m.room.member events, /joined_members a profile each.
        assert big.members_bytes > big.joined_members_bytes > 0
        assert big.initial_sync_p50_ms > 0 and big.initial_sync_bytes > 0
        assert big.rss_peak_bytes > 10 * report.MIB

    summary = rooms.summarize(result, None, sizes)
    by_key = {row["key"]: row for row in summary["rows"]}
    assert by_key["hot_rate"]["peyvand"] == hot.messages_per_second
    assert by_key[f"big{sizes.big_members[-1]}_members"]["peyvand"] == sizes.big_members[-1]
    assert math.isnan(by_key["hot_rate"]["synapse"])
    assert [t["pass"] for t in summary["targets"]] == [False, False]  # no Synapse figures
    assert "| hot: send throughput (16 senders) | msg/s |" in report.table(summary)
