"""Transactions other servers push to this one (Server-Server API, "Transactions",
``PUT /send/{txnId}``): at most one at a time per origin, answered once and the answer
kept for a day so a retry gets it again; PDUs go to ``FederationEventHandler``, EDUs to
``FederationEdus``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from peyvand.background import periodic
from peyvand.errors import Errcode, MatrixError
from peyvand.federation.policy import ServerPolicy
from peyvand.services.federation.received_events import FederationEventHandler
from peyvand.services.rooms.policy_lists import PolicyListService
from peyvand.storage.federation_inbox import FederationInboxStore
from peyvand.types import JsonDict, ServerName, server_name_of

# Server-Server API, "Transactions".
MAX_PDUS: Final = 50
MAX_EDUS: Final = 100
_PRUNE_SECONDS = 3600.0
_KEEP_ANSWERS_SECONDS = 86_400


EduReceiver = Callable[[ServerName, Sequence[Any]], Awaitable[None]]
"""(origin, a transaction's EDUs) -> applied (``FederationEdus.on_edus``)."""


async def drop_edus(origin: ServerName, edus: Sequence[Any]) -> None:
    """``EduReceiver`` where federation is off (no transaction is taken in then)."""
    return None


class InboundTransactions:
    def __init__(
        self,
        policy: ServerPolicy,
        handler: FederationEventHandler,
        inbox: FederationInboxStore,
        policy_lists: PolicyListService,
        on_edus: EduReceiver,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Nothing is taken in from servers the moderation ``policy_lists`` ban; EDUs
        (typing, receipts, to-device, device lists) are applied with ``on_edus``."""
        self._policy = policy
        self._handler = handler
        self._inbox = inbox
        self._policy_lists = policy_lists
        self._on_edus = on_edus
        self._clock = clock
        self._origin_locks: dict[ServerName, asyncio.Lock] = {}
        self._janitor = periodic("federation-janitor", _PRUNE_SECONDS, self._prune)

    def start(self) -> None:
        self._janitor.start()

    async def stop(self) -> None:
        await self._janitor.stop()

    async def _prune(self) -> None:
        """Forget answers to inbound transactions a day old (retries stop long before)."""
        await self._inbox.prune(int((self._clock() - _KEEP_ANSWERS_SECONDS) * 1000))

    async def on_transaction(self, origin: ServerName, txn_id: str, body: Any) -> JsonDict:
        """PUT /_matrix/federation/v1/send/{txnId}: idempotent per (origin, txnId)."""
        if not isinstance(body, dict):
            raise MatrixError(Errcode.BAD_JSON, "Transaction must be a JSON object")
        pdus = body.get("pdus", [])
        edus = body.get("edus", [])
        if not isinstance(pdus, list) or not isinstance(edus, list):
            raise MatrixError(Errcode.BAD_JSON, "pdus and edus must be lists")
        if len(pdus) > MAX_PDUS or len(edus) > MAX_EDUS:
            raise MatrixError(
                Errcode.TOO_LARGE, f"At most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs", status=400
            )
        if body.get("origin", origin) != origin:
            raise MatrixError(Errcode.FORBIDDEN, "Transaction origin does not match")
        # One transaction per origin at a time ("Transactions"): a retry waits for the
        # first attempt and gets its answer.
        async with self._origin_locks.setdefault(origin, asyncio.Lock()):
            seen = await self._inbox.get_response(origin, txn_id)
            if seen is not None:
                return seen
            return await self._process_transaction(origin, txn_id, pdus, edus)

    async def receive_forwarded(self, origin: ServerName, pdus: list[Any]) -> JsonDict:
        """PDUs of a transaction another process took in, for rooms this one writes
        (checked and filtered there): ``{"pdus": results}``."""
        return {"pdus": await self._handler.receive_pdus(origin, pdus, forwarded=True)}

    async def _process_transaction(
        self, origin: ServerName, txn_id: str, pdus: list[Any], edus: list[Any]
    ) -> JsonDict:
        # Events by users of servers this one does not federate with are not taken in,
        # even when another server relays them; nor is anything a server the moderation
        # policy lists ban sends (banned users' events are soft-failed by the handler).
        lists = self._policy_lists
        allowed = [
            raw
            for raw in pdus
            if (
                not isinstance(raw, dict)
                or not isinstance(raw.get("sender"), str)
                or self._policy.allows(server_name_of(raw["sender"]))
            )
            and lists.admits_pdu(origin, raw)
        ]
        results = await self._handler.receive_pdus(origin, allowed)
        if lists.server_rule(origin) is not None:
            edus = []
        await self._on_edus(origin, edus)
        response: JsonDict = {"pdus": results}
        await self._inbox.put_response(origin, txn_id, response, int(self._clock() * 1000))
        return response
