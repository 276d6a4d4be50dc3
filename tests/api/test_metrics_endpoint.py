"""GET /_peyvand/metrics and GET /health of a single process (issue 21, "Operations"),
on every backend: requests counted by route template (never the raw path), the streams'
positions, the database pool and the event loop's lag exported; /health answers 200."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from harness.client import MatrixClient
from harness.server import HomeserverProcess
from peyvand.api.metrics import may_scrape


async def _scrape(base_url: str) -> dict[str, list[Sample]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base_url}/_peyvand/metrics", timeout=aiohttp.ClientTimeout(10)) as r,
    ):
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def _value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    matching = [s.value for s in samples[name] if labels.items() <= s.labels.items()]
    assert len(matching) == 1, (name, labels, samples.get(name))
    return matching[0]


async def test_health_is_ok(homeserver: HomeserverProcess) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{homeserver.base_url}/health", timeout=aiohttp.ClientTimeout(10)) as r,
    ):
        assert r.status == 200
        assert await r.text() == "OK"


async def test_requests_counted_by_route_template(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    alice = await client.register()
    before = await _scrape(homeserver.base_url)
    route = "/_matrix/client/v3/profile/{userId}"
    labels = {"method": "GET", "route": route}
    counted = before.get("peyvand_http_request_duration_seconds_count", [])
    start = next((s.value for s in counted if labels.items() <= s.labels.items()), 0.0)
    missing = "@nobody-metrics:" + alice.user_id.split(":", 1)[1]
    assert (await client.request("GET", f"profile/{alice.user_id}", token=alice)).status == 200
    assert (await client.request("GET", f"profile/{missing}", token=alice)).status == 404
    # The r0 prefix is the same route.
    r0 = f"/_matrix/client/r0/profile/{alice.user_id}"
    assert (await client.request("GET", r0, token=alice)).status == 200
    after = await _scrape(homeserver.base_url)
    assert _value(after, "peyvand_http_request_duration_seconds_count", **labels) == start + 3
    assert _value(after, "peyvand_http_responses_total", **labels, code="4xx") >= 1
    assert _value(after, "peyvand_http_responses_total", **labels, code="2xx") >= 2
    routes = {s.labels.get("route", "") for v in after.values() for s in v}
    assert not any("@" in r for r in routes), routes
    # Unrouted paths are never labels.
    assert "/_matrix/client/v3/nothing/here" not in routes


async def test_positions_pool_and_loop_lag(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    alice = await client.register()
    room = (await client.request("POST", "createRoom", {}, alice)).ok()["room_id"]
    await client.request("PUT", f"rooms/{room}/send/m.room.message/m1", {"body": "x"}, alice)
    await asyncio.sleep(0.6)  # One sample of the loop's lag at least (every 0.5 s).
    samples = await _scrape(homeserver.base_url)
    assert _value(samples, "peyvand_stream_position", stream="events") > 0
    assert {s.labels["stream"] for s in samples["peyvand_stream_position"]} >= {
        "events", "receipts", "to_device", "device_lists", "account_data", "typing",
    }  # fmt: skip
    size = _value(samples, "peyvand_db_pool_connections")
    assert 1 <= size <= _value(samples, "peyvand_db_pool_max")
    assert 0 <= _value(samples, "peyvand_db_pool_in_use") <= size
    assert _value(samples, "peyvand_event_loop_lag_seconds_count") >= 1
    assert _value(samples, "peyvand_pushers") >= 0
    assert _value(samples, "process_cpu_seconds_total") > 0
    # A single process has no bus and follows no writer.
    assert "peyvand_bus_connected" not in samples
    assert "peyvand_events_follower_lag" not in samples


def test_metrics_are_served_to_private_addresses_only() -> None:
    for allowed in ("127.0.0.1", "::1", "10.1.2.3", "192.168.0.7", "::ffff:172.16.0.1", "fd00::1"):
        assert may_scrape(allowed), allowed
    for refused in ("8.8.8.8", "2001:4860:4860::8888", "::ffff:1.1.1.1", None, "", "not an ip"):
        assert not may_scrape(refused), refused
