"""``bench.appservice``: its receiver's bookkeeping and its figures from known arrivals,
then the smoke size against a Peyvand of the test's own with the bench's appservice
registered: every measured message reaches the appservice, once, and the side-by-side rows
come out of the figures. Synapse is neither installed nor run here (``python -m
bench.appservice`` does that)."""

from __future__ import annotations

import math
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.server import HomeserverProcess, start_homeserver

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: bench/

from bench.appservice_receiver import MARKER, Records
from bench.procstat import tree_cpu_seconds
from bench.workloads import Clock

from bench import appservice, report


def _event(event_id: str, body: str) -> dict[str, object]:
    return {"event_id": event_id, "type": "m.room.message", "content": {"body": body}}


def test_records_keep_marked_messages_and_count_repeats() -> None:
    records = Records()
    first = {"events": [_event("$a", f"{MARKER} 0 1.0"), _event("$join", "hello")]}
    records.add("t1", 10.0, first)
    records.add("t1", 11.0, first)
    records.add("t2", 12.0, {"events": [_event("$b", f"{MARKER} 1 2.0")], "ephemeral": []})
    records.add("t3", 13.0, {"events": "not a list"})

    assert records.to_json() == {
        "transactions": [[10.0, 2], [12.0, 1], [13.0, 0]],
        "arrivals": {"$a": [10.0, 0], "$b": [12.0, 1]},
        "repeats": 1,
    }


def test_compute_from_known_sends_and_arrivals() -> None:
    sends = [
        appservice.Sent(100.0, 100.010, "$a"),
        appservice.Sent(100.5, 100.520, "$b"),
        appservice.Sent(101.0, 101.030, "$c"),
        appservice.Sent(101.5, 101.600, None),
    ]
    records = {
        "transactions": [[100.008, 1], [101.0, 5], [102.0, 3]],
        "arrivals": {"$a": [100.008, 0], "$b": [100.530, 1], "$c": [101.050, 1]},
        "repeats": 0,
    }
    figures = appservice.AppServiceFigures()
    appservice.compute(figures, sends, records, 2.0)

    assert (figures.sent, figures.send_errors, figures.achieved_rate) == (3, 1, 1.5)
    assert (figures.received, figures.missing) == (3, 0)
    # From the 200: -2 ms ($a's transaction came before its PUT's reply: kept as measured),
    # 10 and 20 ms; from the start: 8, 30 and 50 ms.
    assert figures.from_answer_p50_ms == pytest.approx(10.0)
    assert figures.from_answer_p99_ms == pytest.approx(19.8)
    assert figures.from_answer_max_ms == pytest.approx(20.0)
    assert figures.from_start_p50_ms == pytest.approx(30.0)
    assert figures.from_start_p99_ms == pytest.approx(49.6)
    assert (figures.transactions, figures.events_per_transaction_max) == (2, 5)
    assert figures.events_per_transaction_mean == pytest.approx(3.0)


@pytest.fixture
def receiver() -> Iterator[appservice.ReceiverProcess]:
    process = appservice.ReceiverProcess(secrets.token_hex(16), max_seconds=300)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def link(receiver: appservice.ReceiverProcess) -> appservice.AppServiceLink:
    return appservice.AppServiceLink(receiver.url, secrets.token_hex(16), receiver.hs_token)


@pytest.fixture
def appservice_server(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, link: appservice.AppServiceLink
) -> Iterator[HomeserverProcess]:
    registration = appservice.write_registration(tmp_path / "bench-appservice.yaml", link)
    options = {"app_service_config_files": f'["{registration}"]'}
    server = start_homeserver(backend, request, tmp_path / "homeserver", options=options)
    try:
        yield server
    finally:
        server.stop()


async def test_appservice_at_smoke_size(
    appservice_server: HomeserverProcess, link: appservice.AppServiceLink
) -> None:
    sizes = appservice.SMOKE
    pid = appservice_server.pid
    figures = await appservice.run_appservice(
        appservice_server.base_url, link, lambda: tree_cpu_seconds(pid), sizes, Clock()
    )

    assert (figures.senders, figures.truncated) == (sizes.senders, False)
    planned = sizes.rate * sizes.measure_seconds
    assert 0.8 * planned <= figures.sent <= planned + 1
    assert figures.send_errors == 0
    assert (figures.received, figures.missing, figures.repeats) == (figures.sent, 0, 0)
    assert 0 < figures.from_start_p50_ms <= figures.from_start_p99_ms < 10_000
    assert figures.from_answer_p50_ms <= figures.from_answer_p99_ms < 10_000
    assert 1 <= figures.transactions <= figures.sent
    assert 1 <= figures.events_per_transaction_mean <= figures.events_per_transaction_max
    assert 0 < figures.cpu_seconds_per_1000_messages < 1000
    assert 0 < figures.bench_cpu_seconds < 1000

    summary = appservice.summarize(figures, None, sizes)
    by_key = {row["key"]: row for row in summary["rows"]}
    assert by_key["achieved"]["peyvand"] == figures.achieved_rate
    assert by_key["answer_p99"]["peyvand"] == figures.from_answer_p99_ms
    assert by_key["missing"]["peyvand"] == 0
    assert math.isnan(by_key["per_txn_mean"]["ratio"])
    assert math.isnan(by_key["cpu"]["synapse"]) and math.isnan(by_key["cpu"]["ratio"])
    assert summary["targets"] == []
    assert "| events per transaction, mean | count |" in report.table(summary)
