"""Token-bucket rate limiting, in memory, keyed per user or per client IP.

Answers ``429 M_LIMIT_EXCEEDED`` with ``retry_after_ms`` (Client-Server API, "Rate
limiting"). Buckets that are full again are dropped so memory stays bounded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from peyvand.errors import Errcode, MatrixError


class RateLimiter:
    def __init__(
        self,
        per_second: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._rate = per_second
        self._burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        # key -> (tokens, last update)
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str, *, take: bool = True) -> None:
        """Take one token for ``key`` or raise 429 with how long to wait; with ``take``
        false only raise, taking nothing."""
        now = self._clock()
        tokens, last = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < 1.0:
            wait = (1.0 - tokens) / self._rate if self._rate > 0 else 60.0
            self._buckets[key] = (tokens, now)
            raise MatrixError(
                Errcode.LIMIT_EXCEEDED,
                "Too many requests",
                retry_after_ms=math.ceil(wait * 1000),
            )
        if not take:
            return
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self._max_keys:
            self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        full = [
            k
            for k, (t, last) in self._buckets.items()
            if t + (now - last) * self._rate >= self._burst
        ]
        for key in full:
            del self._buckets[key]
