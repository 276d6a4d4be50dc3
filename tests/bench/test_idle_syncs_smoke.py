"""``bench.idle_syncs`` at a tiny size against the session's Peyvand: eight long-polls are
held and counted at each step, the RSS figures come out, and the polls are let go."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from harness.server import HomeserverProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: bench/

from bench import idle_syncs


async def test_idle_syncs_at_a_tiny_size(
    homeserver: HomeserverProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idle_syncs, "SETTLE_SECONDS", 0.1)
    monkeypatch.setattr(idle_syncs, "SAMPLES", 1)
    monkeypatch.setattr(idle_syncs, "CPU_WINDOW_SECONDS", 0.1)
    figures = idle_syncs.Figures(connections=8, users=2)
    await idle_syncs.run(homeserver.base_url, homeserver.pid, figures)

    assert [held for held, _ in figures.steps] == [2, 4, 6, 8]
    assert figures.rss_idle_mib > 0 and figures.rss_after_mib > 0
    assert all(rss > 0 for _, rss in figures.steps)
    assert math.isfinite(figures.mib_per_1000)
    assert figures.cpu_seconds_idle_window >= 0
    assert "MiB per 1,000 waiting long-polls" in idle_syncs.table(figures)
