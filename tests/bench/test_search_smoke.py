"""``bench.search`` at its smoke sizes against the session's Peyvand: every message is
seeded, every query of both orders answers and finds something, and the side-by-side
rows come out of the figures. Synapse is neither installed nor run here
(``python -m bench.search`` does that)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from harness.server import HomeserverProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: bench/

from bench.workloads import Clock

from bench import report, search


async def test_search_at_smoke_sizes(homeserver: HomeserverProcess) -> None:
    sizes = search.SMOKE
    result = search.SearchResult("peyvand", "0")
    await search.run_all(homeserver.base_url, sizes, Clock(), result)

    assert (result.requested, result.sent, result.send_errors) == (sizes.messages,) * 2 + (0,)
    assert not result.truncated
    assert result.messages_per_second > 0
    assert set(result.orders) == {"recent", "rank"}
    for figures in result.orders.values():
        assert (figures.queries, figures.errors) == (sizes.queries_per_order, 0)
        # Every term of the mix occurs in the seeded messages.
        assert figures.empty == 0
        assert 0 < figures.p50_ms <= figures.p99_ms
        assert 0 < figures.mean_results <= 10

    summary = search.summarize(result, None)
    by_key = {row["key"]: row for row in summary["rows"]}
    assert by_key["sent"]["peyvand"] == sizes.messages
    assert by_key["recent_p50"]["peyvand"] == result.orders["recent"].p50_ms
    assert math.isnan(by_key["rank_p99"]["synapse"])
    assert "| search recent: p50 | ms |" in report.table(summary)


def test_the_vocabulary_and_query_mix() -> None:
    vocabulary = search.words(search.SMOKE.vocabulary)
    assert len(vocabulary) == len(set(vocabulary)) == search.SMOKE.vocabulary
    terms = search.query_terms(vocabulary)
    assert any(term in search.PERSIAN for term in terms)
    assert all(word in vocabulary for term in terms for word in term.split())
