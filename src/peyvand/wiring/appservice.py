"""Application services' transactions: the events and extras pushed to each appservice
(``services/appservice/transactions.py``), fed by the dispatcher's commits, the
registry's reloads, the invites received from other servers and the extras' wake-ups."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from peyvand.config import Config
from peyvand.services.appservice.extras import AppServiceExtras
from peyvand.services.appservice.interest import AppServiceInterest
from peyvand.services.appservice.sender import SenderDeps
from peyvand.services.appservice.transactions import AppServiceTransactions
from peyvand.services.appservice.txn_events import TransactionEvents
from peyvand.storage.appservice_extras import AppServiceExtrasStore
from peyvand.storage.appservice_txns import AppServiceTxnStore
from peyvand.storage.database import Database
from peyvand.storage.models import StoredEvent
from peyvand.types import JsonDict
from peyvand.wiring.federation import Federation
from peyvand.wiring.local import Local, Timeline
from peyvand.wiring.rooms import Rooms


@dataclass(frozen=True, slots=True)
class AppServices:
    interest: AppServiceInterest
    extras: AppServiceExtras
    transactions: AppServiceTransactions


def build_appservices(
    config: Config,
    db: Database,
    timeline: Timeline,
    local: Local,
    rooms: Rooms,
    federation: Federation,
) -> AppServices:
    interest = AppServiceInterest(
        config.server_name, timeline.state, rooms.directory_store.get_aliases_for_room
    )
    extras = AppServiceExtras(
        local.appservices,
        AppServiceExtrasStore(db),
        timeline.notifier,
        local.typing,
        local.receipts,
        local.presence,
        timeline.index,
        interest.is_interested_in_room,
    )
    rooms.directory.alias_hooks.append(interest.on_aliases_changed)
    local.typing.change_hooks.append(extras.on_typing)
    local.receipts.stored_hooks.append(extras.on_receipt)
    local.presence.change_hooks.append(extras.on_presence)
    local.to_device.stored_hooks.append(extras.on_to_device)
    local.device_lists.change_hooks.append(extras.on_device_list_changed)
    local.e2e_keys.counts_hooks.append(extras.on_keys_changed)

    async def serialize(events: Sequence[StoredEvent]) -> list[JsonDict]:
        return await rooms.room_events.serialize(events, None)

    store = AppServiceTxnStore(db)
    deps = SenderDeps(
        store=store,
        interest=interest,
        extras=extras,
        push=local.appservice_client.push_transaction,
        load=TransactionEvents(timeline.state, serialize, store.invites_at).load,
        now_ms=lambda: int(time.time() * 1000),
    )
    transactions = AppServiceTransactions(local.appservices, deps, max_position=timeline.announced)
    timeline.dispatcher.listeners.append(transactions.on_persisted)
    local.appservices.listeners.append(transactions.on_registrations)
    federation.service.invite_inbox.listeners.append(transactions.on_remote_invite)
    extras.wake.append(transactions.on_extras)
    return AppServices(interest, extras, transactions)
