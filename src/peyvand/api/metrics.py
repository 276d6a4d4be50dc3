"""Prometheus metrics of one process (issue 21, "Operations"; docs/operator-guide.md,
"Metrics and health"), served at ``GET /_peyvand/metrics`` in Prometheus' text format.

Each process has its own registry (several apps in one test process do not collide).
Label sets are bounded: requests are labelled with their route's template, never the
raw path; federation destinations by the ``MAX_DESTINATION_LABELS`` busiest only;
pushers as totals (their number grows with the users). What is a position or a queue is
read when Prometheus scrapes (``StateCollector``), so serving requests pays only for the
request histogram: a route's counters (``RouteMetrics``), kept as plain integers and
exported at the scrape, only for the routes requested since the start.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from peyvand.background import BackgroundTask
from peyvand.errors import Errcode, MatrixError
from peyvand.netguard import peer_address

METRICS_PATH = "/_peyvand/metrics"
# Long-polls (/sync) are requests too: the top buckets hold them.
REQUEST_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# How often the event loop's scheduling delay is sampled.
LOOP_LAG_INTERVAL_SECONDS = 0.5
# Federation destinations named in labels: the ones with the most waiting, then failures.
MAX_DESTINATION_LABELS = 20
_STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class RouteMetrics:
    """One route's request counts: its latency histogram's buckets and sum, and its
    responses by status class. Plain integers, no lock: only the event loop's thread
    touches them (the scrape too), so a request costs a bisection and three additions."""

    __slots__ = ("buckets", "codes", "method", "route", "total_seconds")

    def __init__(self, method: str, route: str) -> None:
        self.method = method
        self.route = route
        # One more than the bounds: the last counts what exceeds them all (+Inf).
        self.buckets = [0] * (len(REQUEST_BUCKETS) + 1)
        self.total_seconds = 0.0
        self.codes = [0] * len(_STATUS_CLASSES)

    def observe(self, seconds: float, status: int) -> None:
        self.buckets[bisect_left(REQUEST_BUCKETS, seconds)] += 1
        self.total_seconds += seconds
        self.codes[min(max(status // 100, 1), 5) - 1] += 1


class RequestMetrics(Collector):
    """The request metrics of every route, exported for the routes that were requested."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._routes: dict[tuple[str, str], RouteMetrics] = {}
        registry.register(self)

    def for_route(self, method: str, route: str) -> RouteMetrics:
        """The metrics of ``route`` (its template, as declared: ``/v3/`` for both client
        prefixes), shared by every path it is mounted on."""
        key = (method, route)
        metrics = self._routes.get(key)
        if metrics is None:
            metrics = self._routes[key] = RouteMetrics(method, route)
        return metrics

    def collect(self) -> Iterator[Metric]:
        duration = HistogramMetricFamily(
            "peyvand_http_request_duration_seconds",
            "Time from routing a request to its handler's answer (a long-poll's written), "
            "by route template",
            labels=["method", "route"],
        )
        responses = CounterMetricFamily(
            "peyvand_http_responses",
            "Responses by route template and status class",
            labels=["method", "route", "code"],
        )
        bounds = [*(repr(b) for b in REQUEST_BUCKETS), "+Inf"]
        for route in list(self._routes.values()):
            counts = list(accumulate(route.buckets))
            if not counts[-1]:
                continue
            labels = [route.method, route.route]
            duration.add_metric(labels, list(zip(bounds, counts, strict=True)), route.total_seconds)
            for code, count in zip(_STATUS_CLASSES, route.codes, strict=True):
                if count:
                    responses.add_metric([*labels, code], count)
        yield duration
        yield responses


@dataclass
class StateSources:
    """What ``StateCollector`` reads at each scrape; None where this process has none."""

    stream_positions: Callable[[], Mapping[str, int]]
    pool_usage: Callable[[], tuple[int, int, int]]
    # The events stream: this process's position and the writer's it last heard of.
    follower_position: Callable[[], int] | None = None
    writer_position: Callable[[], int] | None = None
    bus_connected: Callable[[], bool] | None = None
    # (destination, queued in memory, failures in a row) of the non-idle destinations.
    federation_queues: Callable[[], Sequence[tuple[str, int, int]]] | None = None
    # (pushers, queued notifications, failing pushers).
    pusher_queues: Callable[[], tuple[int, int, int]] | None = None
    # (appservice ID, queue length, consecutive failures).
    appservice_queues: Callable[[], Sequence[tuple[str, int, int]]] | None = None


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class StateCollector(Collector):
    """Positions, lags, queues and the database pool, read when scraped."""

    def __init__(self, sources: StateSources) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        sources = self._sources
        positions = GaugeMetricFamily(
            "peyvand_stream_position",
            "Each stream's position as this process's notifier has it",
            labels=["stream"],
        )
        for stream, position in sources.stream_positions().items():
            positions.add_metric([stream], position)
        yield positions
        size, in_use, most = sources.pool_usage()
        yield _gauge("peyvand_db_pool_connections", "Database connections open", size)
        yield _gauge("peyvand_db_pool_in_use", "Database connections in use", in_use)
        yield _gauge("peyvand_db_pool_max", "Database connections at most", most)
        yield from self._events_stream()
        yield from self._federation()
        if sources.pusher_queues is not None:
            pushers, queued, failing = sources.pusher_queues()
            yield _gauge("peyvand_pushers", "HTTP pushers delivering from here", pushers)
            yield _gauge("peyvand_pusher_queued", "Notifications queued in pushers", queued)
            yield _gauge("peyvand_pushers_failing", "Pushers whose gateway fails", failing)
        if sources.appservice_queues is not None:
            queue = GaugeMetricFamily(
                "peyvand_appservice_queued",
                "Events waiting for each application service",
                labels=["appservice"],
            )
            failures = GaugeMetricFamily(
                "peyvand_appservice_failures",
                "Failed transactions in a row, per application service",
                labels=["appservice"],
            )
            for appservice_id, queued, failed in sources.appservice_queues():
                queue.add_metric([appservice_id], queued)
                failures.add_metric([appservice_id], failed)
            yield queue
            yield failures

    def _events_stream(self) -> Iterator[Metric]:
        sources = self._sources
        if sources.bus_connected is not None:
            yield _gauge(
                "peyvand_bus_connected",
                "1 while the bus between the processes is connected",
                int(sources.bus_connected()),
            )
        writer = sources.writer_position() if sources.writer_position is not None else None
        if writer is not None:
            yield _gauge(
                "peyvand_events_writer_position",
                "The event writer's persisted position, as last heard on the bus",
                writer,
            )
        if sources.follower_position is not None:
            followed = sources.follower_position()
            yield _gauge(
                "peyvand_events_follower_position",
                "How far this process has read the events stream",
                followed,
            )
            yield _gauge(
                "peyvand_events_follower_lag",
                "Events positions the writer has persisted that this process has not read",
                max(0, (writer or 0) - followed),
            )

    def _federation(self) -> Iterator[Metric]:
        if self._sources.federation_queues is None:
            return
        busy = sorted(self._sources.federation_queues(), key=lambda d: (-d[1], -d[2], d[0]))
        queued = GaugeMetricFamily(
            "peyvand_federation_destination_queued",
            f"PDUs and EDUs waiting in memory for the {MAX_DESTINATION_LABELS} busiest "
            "destinations",
            labels=["destination"],
        )
        failures = GaugeMetricFamily(
            "peyvand_federation_destination_failures",
            f"Failed attempts in a row, for the {MAX_DESTINATION_LABELS} busiest destinations",
            labels=["destination"],
        )
        for destination, waiting, failed in busy[:MAX_DESTINATION_LABELS]:
            queued.add_metric([destination], waiting)
            failures.add_metric([destination], failed)
        yield queued
        yield failures
        yield _gauge(
            "peyvand_federation_destinations_pending",
            "Destinations with something waiting or failing",
            len(busy),
        )
        yield _gauge(
            "peyvand_federation_destinations_failing",
            "Destinations whose last attempt failed",
            sum(1 for d in busy if d[2]),
        )
        yield _gauge(
            "peyvand_federation_queued",
            "PDUs and EDUs waiting in memory for every destination",
            sum(d[1] for d in busy),
        )


class EventLoopLag:
    """Samples the event loop's scheduling delay: how late a timer fires. A busy loop
    (a long synchronous step, too much work) delays every request by as much."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._histogram = Histogram(
            "peyvand_event_loop_lag_seconds",
            "How late a timer's callback ran",
            buckets=LOOP_LAG_BUCKETS,
            registry=registry,
        )
        self._last = Gauge(
            "peyvand_event_loop_lag_last_seconds",
            "The last sampled event loop lag",
            registry=registry,
        )
        self._task = BackgroundTask("event loop lag", self._sample)

    async def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LOOP_LAG_INTERVAL_SECONDS
            await asyncio.sleep(LOOP_LAG_INTERVAL_SECONDS)
            lag = max(0.0, loop.time() - due)
            self._histogram.observe(lag)
            self._last.set(lag)


class ServerMetrics:
    """One process's registry and the metrics kept as the server runs."""

    def __init__(self, worker: str) -> None:
        self.registry = CollectorRegistry()
        self.worker = worker
        self.requests = RequestMetrics(self.registry)
        self.loop_lag = EventLoopLag(self.registry)
        ProcessCollector(registry=self.registry)
        self._started = Gauge(
            "peyvand_process_start_time_seconds",
            "When this process started, Unix time",
            ["worker"],
            registry=self.registry,
        )
        self._started.labels(worker).set(time.time())

    def watch(self, sources: StateSources) -> None:
        """Report ``sources`` at each scrape."""
        self.registry.register(StateCollector(sources))

    async def handle(self, request: web.Request) -> web.Response:
        """``GET /_peyvand/metrics``: every metric in Prometheus' text format, to a
        scraper on a loopback or private address only (the metrics name appservices and
        other servers); 403 for anyone else."""
        if not may_scrape(request.remote):
            raise MatrixError(Errcode.FORBIDDEN, "Metrics are served to private addresses only")
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def may_scrape(remote: str | None) -> bool:
    """Whether a request from ``remote`` (the client's address, behind a trusted proxy
    the forwarded one) may read the metrics: loopback and private networks only."""
    address = peer_address(remote)
    return address is not None and (address.is_loopback or address.is_private)
