"""``bench.push`` at its smoke size against a Peyvand of the test's own, allowed to reach
gateways on 127.0.0.1: every push of every message reaches the bench's gateway once, and
the side-by-side rows come out of the figures. Synapse is neither installed nor run here
(``python -m bench.push`` does that)."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.server import HomeserverProcess, start_homeserver

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: bench/

from bench.procstat import tree_cpu_seconds
from bench.workloads import Clock

from bench import push, report


@pytest.fixture
def push_server(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[HomeserverProcess]:
    options = {"push.gateway_allowed_networks": '["127.0.0.1/32"]'}
    server = start_homeserver(backend, request, tmp_path / "homeserver", options=options)
    try:
        yield server
    finally:
        server.stop()


async def test_push_at_smoke_size(push_server: HomeserverProcess) -> None:
    sizes = push.SMOKE
    pid = push_server.pid
    figures = await push.run_push(
        push_server.base_url, lambda: tree_cpu_seconds(pid), sizes, Clock()
    )

    others = sizes.users - 1
    assert (figures.users, figures.truncated) == (sizes.users, False)
    assert (figures.messages, figures.send_errors) == (sizes.messages, 0)
    assert figures.pushes_expected == figures.pushes_arrived == sizes.messages * others
    assert (figures.missing, figures.repeats) == (0, 0)
    assert len(figures.last_push_ms) == len(figures.first_push_ms) == sizes.messages
    for first, last in zip(figures.first_push_ms, figures.last_push_ms, strict=True):
        assert 0 < first <= last < sizes.push_wait_seconds * 1000
    assert 0 < figures.cpu_seconds_per_1000_pushes < 1000

    summary = push.summarize(figures, None)
    by_key = {row["key"]: row for row in summary["rows"]}
    assert by_key["users"]["peyvand"] == sizes.users
    assert by_key["last_max"]["peyvand"] == max(figures.last_push_ms)
    assert by_key["missing"]["peyvand"] == 0
    assert math.isnan(by_key["cpu"]["synapse"]) and math.isnan(by_key["cpu"]["ratio"])
    assert summary["targets"] == []
    assert "| server CPU per 1,000 pushes | s |" in report.table(summary)
