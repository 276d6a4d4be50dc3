"""The metrics read at each scrape and the health check, without a server (issue 21,
"Operations"): label sets stay bounded (the busiest federation destinations only), the
follower's lag is the writer's heard position minus its own, /health says 503 with the
reason; and docs/grafana-peyvand.json is valid and queries only exported metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import make_mocked_request
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from peyvand.api.health import Health
from peyvand.api.metrics import MAX_DESTINATION_LABELS, ServerMetrics, StateSources

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-peyvand.json"


def _every_source(destinations: int = 3) -> StateSources:
    return StateSources(
        stream_positions=lambda: {"events": 12, "receipts": 3},
        pool_usage=lambda: (4, 1, 10),
        follower_position=lambda: 9,
        writer_position=lambda: 12,
        bus_connected=lambda: True,
        federation_queues=lambda: [(f"s{i}.example", i, i % 2) for i in range(destinations)],
        pusher_queues=lambda: (5, 7, 1),
        appservice_queues=lambda: [("bridge", 2, 0)],
    )


def _exported(metrics: ServerMetrics) -> dict[str, list[Any]]:
    samples: dict[str, list[Any]] = {}
    text = generate_latest(metrics.registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def _full_metrics(destinations: int = 3) -> ServerMetrics:
    metrics = ServerMetrics("writer")
    metrics.watch(_every_source(destinations))
    route = metrics.requests.for_route("GET", "/_matrix/client/v3/sync")
    route.observe(0.01, 200)
    route.observe(0.02, 429)
    return metrics


def test_state_read_at_scrape() -> None:
    samples = _exported(_full_metrics())
    assert samples["peyvand_events_follower_lag"][0].value == 3
    assert samples["peyvand_events_writer_position"][0].value == 12
    assert samples["peyvand_bus_connected"][0].value == 1
    assert samples["peyvand_db_pool_in_use"][0].value == 1
    assert samples["peyvand_pusher_queued"][0].value == 7
    assert samples["peyvand_appservice_queued"][0].labels == {"appservice": "bridge"}
    codes = {s.labels["code"]: s.value for s in samples["peyvand_http_responses_total"]}
    assert codes == {"2xx": 1, "4xx": 1}


def test_destinations_named_are_bounded() -> None:
    samples = _exported(_full_metrics(destinations=500))
    named = samples["peyvand_federation_destination_queued"]
    assert len(named) == MAX_DESTINATION_LABELS
    # The busiest ones.
    assert min(s.value for s in named) == 500 - MAX_DESTINATION_LABELS
    assert samples["peyvand_federation_destinations_pending"][0].value == 500
    assert samples["peyvand_federation_destinations_failing"][0].value == 250
    assert samples["peyvand_federation_queued"][0].value == sum(range(500))


async def test_health_answers_503_with_the_reason() -> None:
    health = Health()
    request = make_mocked_request("GET", "/health")
    starting = await health.handle(request)
    assert starting.status == 503
    health.serving = True
    connected = [True]
    health.checks.append(lambda: None if connected[0] else "bus disconnected")
    assert (await health.handle(request)).status == 200
    connected[0] = False
    down = await health.handle(request)
    assert down.status == 503 and down.text == "Unavailable: bus disconnected"


def test_dashboard_queries_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exported = set(_exported(_full_metrics()))
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 10
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    for expr in exprs:
        names = re.findall(r"\b(?:peyvand|process)_[a-z_]+", expr)
        assert names, expr
        for name in names:
            assert name in exported, (name, expr)
