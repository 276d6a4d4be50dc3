"""Start-up and shut-down: one list of components, started in order and stopped in
reverse. A stop that fails is logged and the others still stop; only what started is
stopped."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger(__name__)

Step = Callable[[], Awaitable[None] | None]


class Component(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Hooks:
    """A component whose start or stop is not an async ``start``/``stop`` (a ``close``, a
    synchronous ``start``, nothing to do at start)."""

    start: Step = _nothing
    stop: Step = _nothing


async def run_step(step: Step) -> None:
    """Run a start or stop step, awaiting it if it is a coroutine."""
    result = step()
    if result is not None:
        await result


class Lifecycle:
    def __init__(self) -> None:
        self._components: list[tuple[str, Component | Hooks]] = []
        self._started: list[tuple[str, Component | Hooks]] = []

    def add(self, name: str, component: Component | Hooks) -> None:
        """Start ``component`` after those added before it (and stop it before them)."""
        self._components.append((name, component))

    async def start(self) -> None:
        for name, component in self._components:
            await run_step(component.start)
            self._started.append((name, component))
            logger.debug("started %s", name)

    async def stop(self) -> None:
        while self._started:
            name, component = self._started.pop()
            try:
                await run_step(component.stop)
            except Exception:
                logger.exception("stopping %s failed", name)
