"""The process's metrics and health (issue 21, "Operations"): what each reads from the
components built before them. Nothing here runs per request but the request histogram
(``api.metrics``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from peyvand.api.health import Health
from peyvand.api.metrics import ServerMetrics, StateSources
from peyvand.config import Config
from peyvand.services.sync.streams import Stream
from peyvand.services.timeline.event_follower import CHANNEL, EventStreamFollower
from peyvand.wiring.appservice import AppServices
from peyvand.wiring.federation import Transport
from peyvand.wiring.lifecycle import Component
from peyvand.wiring.local import Local, Timeline

_STREAMS = tuple(stream.value for stream in Stream)


@runtime_checkable
class _ConnectedBus(Protocol):
    """The bus of a deployment (``storage.bus.PostgresBus``), as the metrics see it."""

    @property
    def connected(self) -> bool: ...

    def subscribe(self, channel: str, callback: Callable[[dict[str, Any], str], None]) -> None: ...


@dataclass
class Observability:
    metrics: ServerMetrics
    health: Health


class _HeardPosition:
    """The newest events position published on the bus (by the writer; the writer
    hears its own)."""

    def __init__(self) -> None:
        self.position = 0

    def on_message(self, payload: dict[str, Any], _sender: str) -> None:
        position = payload.get("p")
        if isinstance(position, int) and position > self.position:
            self.position = position


def build_observability(
    config: Config,
    pool_usage: Callable[[], tuple[int, int, int]],
    timeline: Timeline,
    local: Local,
    transport: Transport,
    appservices: AppServices,
    workers: Sequence[tuple[str, Component]],
) -> Observability:
    """The metrics (every process) and the health check of this process; the caller
    starts ``metrics.loop_lag`` and sets ``health.serving``."""
    metrics = ServerMetrics(config.workers.instance or "main")
    health = Health()
    notifier = timeline.notifier

    def stream_positions() -> Mapping[str, int]:
        return dict(zip(_STREAMS, notifier.current_token.positions(), strict=True))

    def appservice_queues() -> list[tuple[str, int, int]]:
        return [
            (s.appservice_id, s.queue_length, s.consecutive_failures)
            for s in appservices.transactions.status()
        ]

    sources = StateSources(
        stream_positions=stream_positions,
        pool_usage=pool_usage,
        pusher_queues=local.pusher_pool.queue_stats,
        appservice_queues=appservice_queues,
    )
    if config.federation.enabled:
        sources.federation_queues = transport.sender.queue_status
    for _, component in workers:
        if isinstance(component, _ConnectedBus):
            _watch_bus(component, sources, health)
        elif isinstance(component, EventStreamFollower):
            sources.follower_position = _follower_position(component)
    metrics.watch(sources)
    return Observability(metrics, health)


def _watch_bus(bus: _ConnectedBus, sources: StateSources, health: Health) -> None:
    heard = _HeardPosition()
    bus.subscribe(CHANNEL, heard.on_message)
    sources.bus_connected = lambda: bus.connected
    sources.writer_position = lambda: heard.position
    health.checks.append(lambda: None if bus.connected else "bus disconnected")


def _follower_position(follower: EventStreamFollower) -> Callable[[], int]:
    return lambda: follower.position
