"""Indexing, for server-side search, the events stored before the index existed
(migration 032 records where they end).

A background job rather than the migration: the index holds text normalised in Python
(``events.search_text``), which SQL cannot reproduce. It runs from start-up, newest
events first (recent messages become searchable first), ``_BATCH`` events per
transaction with a pause between, and stops for good once it reaches the oldest event;
a restart resumes where it stopped. New events are indexed in their own commit anyway.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from peyvand.background import BackgroundTask
from peyvand.storage.search import SearchStore

__all__ = ["SearchBackfill"]

logger = logging.getLogger(__name__)

_BATCH: Final = 500
# Between batches: the writer stays free for sends.
_PAUSE_SECONDS: Final = 0.05
# After a failed batch (the database away), before trying again.
_RETRY_SECONDS: Final = 30.0


class SearchBackfill:
    def __init__(self, store: SearchStore) -> None:
        self._store = store
        self._task = BackgroundTask("search backfill", self._run)

    async def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        indexed = 0
        while True:
            try:
                more = await self._store.index_earlier_events(_BATCH)
            except Exception:
                logger.exception("search backfill failed; trying again")
                await asyncio.sleep(_RETRY_SECONDS)
                continue
            if not more:
                break
            indexed += _BATCH
            await asyncio.sleep(_PAUSE_SECONDS)
        if indexed:
            logger.info("search backfill done (about %d earlier events read)", indexed)
