"""The ``m.push_rules`` global account data of /sync (Client-Server API, "Push Rules:
Events": "When a user changes their push rules a m.push_rules event is sent to all
clients in the account_data section of their next /sync request. The content of the
event is the current push rules for the user.")

``PushRulesAccountData`` is the account data source /sync reads. Two halves:

- each change to a user's rules is written through as server-managed global account data
  (by one background task, in change order, coalescing bursts), which takes the next
  account data stream position and wakes the user's syncs, so incremental syncs carry it;
- a sync from the start of the stream (initial or ``full_state``) gets the current rules
  computed on the spot, so users who never changed a rule need no stored copy, and a
  stored copy made before a server upgrade changed the default rules is never shown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from peyvand.background import BackgroundTask
from peyvand.services.sync.account_data import AccountDataService
from peyvand.storage.account_data import GLOBAL
from peyvand.types import JsonDict, RoomID, UserID

logger = logging.getLogger(__name__)

PUSH_RULES_EVENT_TYPE = "m.push_rules"


class PushRulesSource(Protocol):
    def add_listener(self, listener: Callable[[str], None]) -> None: ...

    async def get_rules_json(self, user_id: str) -> JsonDict: ...


class PushRulesAccountData:
    def __init__(self, account_data: AccountDataService, push_rules: PushRulesSource) -> None:
        self._account_data = account_data
        self._push_rules = push_rules
        # Users whose rules changed since their last write; a dict keeps change order.
        self._changed: dict[UserID, None] = {}
        self._wakeup = asyncio.Event()
        self._writer = BackgroundTask("push-rules-account-data", self._write_forever)
        push_rules.add_listener(self._on_change)

    def start(self) -> None:
        self._writer.start()

    async def stop(self) -> None:
        await self._writer.stop()

    # -- AccountDataSource for /sync ------------------------------------------------------

    async def global_account_data_since(
        self, user_id: UserID, since: int | None, until: int
    ) -> list[JsonDict]:
        """The user's global account data changed in ``(since, until]``; all of it with
        ``since`` None (an initial sync), always with ``m.push_rules`` holding the
        current rules. (A position of 0 is no initial sync: a token taken before the
        server's first account data write is an incremental one.)"""
        events = await self._account_data.global_account_data_since(user_id, since or 0, until)
        if since is None:
            events = [e for e in events if e["type"] != PUSH_RULES_EVENT_TYPE]
            events.append(
                {
                    "type": PUSH_RULES_EVENT_TYPE,
                    "content": await self._push_rules.get_rules_json(user_id),
                }
            )
        return events

    async def room_account_data_since(
        self, user_id: UserID, since: int | None, until: int
    ) -> dict[RoomID, list[JsonDict]]:
        return await self._account_data.room_account_data_since(user_id, since, until)

    # -- write-through ------------------------------------------------------------------

    def _on_change(self, user_id: str) -> None:
        self._changed[UserID(user_id)] = None
        self._wakeup.set()

    async def _write_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._changed:
                user_id = next(iter(self._changed))
                del self._changed[user_id]
                try:
                    await self._write(user_id)
                except Exception:
                    logger.exception("writing m.push_rules account data of %s failed", user_id)

    async def _write(self, user_id: UserID) -> None:
        """Store the user's current rules as their ``m.push_rules`` account data."""
        content = await self._push_rules.get_rules_json(user_id)
        await self._account_data.set_server_managed(
            user_id, RoomID(GLOBAL), PUSH_RULES_EVENT_TYPE, content
        )
