"""The bench client's workloads at tiny sizes against the session's Peyvand: every figure
comes out and is sane. Synapse is neither installed nor run here (``bench/run`` does that)."""

from __future__ import annotations

import math
import sys
import uuid
from pathlib import Path

from harness.server import HomeserverProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: bench/

from bench import client, procstat, report, workloads


async def test_workloads_at_tiny_sizes(homeserver: HomeserverProcess) -> None:
    sizes = workloads.SMOKE
    async with client.new_session() as session:
        figures = await workloads.run_all(
            client.MatrixClient(session, homeserver.base_url),
            sizes,
            prefix=f"smoke{uuid.uuid4().hex[:8]}",
            cpu=lambda: procstat.tree_cpu_seconds(homeserver.pid),
        )

    for sends, requested in (
        (figures.sequential, sizes.sequential_sends),
        (figures.concurrent, sizes.concurrent_senders * sizes.sends_per_sender),
    ):
        assert (sends.sent, sends.errors, sends.truncated) == (requested, 0, False)
        assert sends.messages_per_second > 0
        assert 0 < sends.p50_ms <= sends.p99_ms < sends.seconds * 1000
        assert sends.cpu_seconds >= 0
    assert 0 <= figures.cpu_seconds_per_1000_messages < 1000

    delivery = figures.delivery
    assert delivery.users == sizes.users
    assert delivery.messages == sizes.delivery_messages
    assert delivery.deliveries == sizes.delivery_messages * (sizes.users - 1)
    assert delivery.missing == 0
    assert 0 <= delivery.p50_ms <= delivery.p99_ms < 5000
    assert 0 < delivery.from_request_p50_ms <= delivery.from_request_p99_ms < 5000

    synced = figures.initial_sync
    assert (synced.rooms, synced.messages) == (
        sizes.sync_rooms,
        sizes.sync_rooms * sizes.messages_per_room,
    )
    assert (synced.samples, synced.errors) == (sizes.initial_syncs, 0)
    assert 0 < synced.p50_ms <= synced.p99_ms
    assert synced.size_bytes > 1000


def test_process_tree_figures(homeserver: HomeserverProcess) -> None:
    assert homeserver.pid in procstat.process_tree(homeserver.pid)
    assert 10 * report.MIB < procstat.tree_rss_bytes(homeserver.pid) < 4096 * report.MIB
    assert procstat.tree_cpu_seconds(homeserver.pid) > 0


def test_report_table_and_targets() -> None:
    def result(name: str, rate: float, rss: int) -> report.ServerResult:
        sends = workloads.SendFigures(requested=10, sent=10, messages_per_second=rate)
        sends.cpu_seconds = 1.0
        figures = workloads.Figures(
            sends, sends, workloads.DeliveryFigures(users=2), workloads.InitialSyncFigures()
        )
        return report.ServerResult(name, "0", figures, rss, rss, 1.0)

    summary = report.build(result("peyvand", 1000.0, 20), result("synapse", 50.0, 100))
    targets = {t["label"]: t["pass"] for t in summary["targets"]}
    assert targets["send throughput (2) >= 10x Synapse"] is True
    assert targets["peak RSS <= 1/4 of Synapse"] is True
    assert targets["delivery p99 (3) <= 1/3 of Synapse"] is False  # NaN: not measured
    assert targets["CPU per 1,000 messages <= 1/10 of Synapse"] is False  # same CPU
    text = report.table(summary)
    assert "| 2 concurrent send (32/8) | msg/s | 1,000 | 50.0 | 20.0 | 20.0x |" in text
    assert math.isnan(report.ratio(1.0, 0.0))
