"""The services that need neither rooms' memberships nor other servers: the timeline
(event creation, the writer, dispatch, room state and index), accounts, sync streams,
end-to-end encryption and push."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from peyvand.config import Config
from peyvand.events.signing import SigningKey
from peyvand.federation.appservice_client import AppServiceClient
from peyvand.federation.push_gateway import PushGatewayClient
from peyvand.services.accounts.auth import AuthService
from peyvand.services.appservice.auth import AppServiceAuth
from peyvand.services.appservice.queries import AppServiceQueries
from peyvand.services.appservice.registry import AppServiceRegistry
from peyvand.services.e2ee.device_lists import DeviceListService
from peyvand.services.e2ee.keys import E2eKeysService
from peyvand.services.e2ee.to_device import ToDeviceService
from peyvand.services.push.account_data import PushRulesAccountData
from peyvand.services.push.actions import PushActionsService
from peyvand.services.push.delivery.pool import PusherPool, UsersWithPushers
from peyvand.services.push.pushers import PusherService
from peyvand.services.push.rules_api import PushRulesService
from peyvand.services.rooms.visibility import VisibilityService
from peyvand.services.sync.account_data import AccountDataService
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.presence import PresenceService
from peyvand.services.sync.read_positions import ReadPositionCache
from peyvand.services.sync.receipts import ReceiptService
from peyvand.services.sync.recent_events import RecentEvents
from peyvand.services.sync.streams import StreamToken
from peyvand.services.sync.typing import TypingService
from peyvand.services.timeline.event_creation import EventCreationService
from peyvand.services.timeline.event_dispatch import EventDispatcher
from peyvand.services.timeline.event_follower import followed_position
from peyvand.services.timeline.event_writer import EventWriter
from peyvand.services.timeline.relation_checks import RelationChecks
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.services.timeline.room_state import StateService
from peyvand.services.timeline.stream_tracker import EventPositions, Lane, StreamTracker
from peyvand.storage.account_data import AccountDataStore
from peyvand.storage.accounts import AccountStore
from peyvand.storage.database import Database
from peyvand.storage.device_lists import DeviceListStore
from peyvand.storage.e2e_keys import E2eKeyStore
from peyvand.storage.events import EventStore
from peyvand.storage.membership_history import MembershipHistoryStore
from peyvand.storage.notifications import NotificationStore
from peyvand.storage.push_actions import PushActionStore
from peyvand.storage.push_rules import PushRuleStore
from peyvand.storage.pushers import PusherStore
from peyvand.storage.receipts import ReceiptStore
from peyvand.storage.relations import RelationStore
from peyvand.storage.remote_invites import RemoteInviteStore
from peyvand.storage.stream_positions import StreamPositionStore
from peyvand.storage.threads import ThreadStore
from peyvand.storage.threepids import ThreepidStore
from peyvand.storage.to_device import ToDeviceStore


@dataclass(frozen=True, slots=True)
class Timeline:
    event_store: EventStore
    remote_invites: RemoteInviteStore
    notifier: Notifier
    state: StateService
    index: RoomIndex
    recent: RecentEvents
    events: EventCreationService
    dispatcher: EventDispatcher
    writer: EventWriter
    # The events positions this process allocates (an event writer).
    positions: EventPositions
    # The events position the notifier and the room index start from.
    starts_at: int

    def written_elsewhere(self, position: int) -> bool:
        """Whether the event at ``position`` was committed by another event writer (one
        of several), so that what its commit evaluated here is in the database only."""
        tracker = self.positions
        return tracker.lane.count > 1 and not tracker.allocated_here(position)

    async def announced(self) -> int:
        """The events position this process has announced: every event at or below it
        is committed (the highest stored one need not be: with several event writers,
        another may still commit below it)."""
        return self.notifier.current_token.events


async def build_timeline(config: Config, db: Database, signing_key: SigningKey) -> Timeline:
    """Event creation and the group-committing writer, whose commits the dispatcher
    announces to the room index, the notifier and the listeners added later."""
    event_store = EventStore(db)
    remote_invites = RemoteInviteStore(db)
    # A process without the role follows the writers' commits (``wiring.workers``), as
    # does each of several writers the others', from their recorded positions.
    lane = Lane(*config.workers.writer_lane)
    follows = not config.workers.has_role("event_writer") or lane.count > 1
    writers = [i.name for i in config.workers.with_role("event_writer")]
    starts_at = await (
        followed_position(StreamPositionStore(db), event_store, writers)
        if follows
        else event_store.get_max_stream_ordering()
    )
    notifier = Notifier(StreamToken(events=starts_at))
    state = StateService(event_store, event_cache_size=config.caches.events, lane=lane)
    index = RoomIndex(event_store, remote_invites, starts_at=starts_at if follows else None)
    positions: EventPositions = StreamTracker(lane=lane)
    dispatcher = EventDispatcher(config.server_name, state, index, notifier, positions)
    writer = EventWriter(db, event_store, dispatcher.on_persisted, dispatcher.on_failed)
    recent = RecentEvents(state)
    dispatcher.listeners.append(recent.on_persisted)
    return Timeline(
        event_store=event_store,
        remote_invites=remote_invites,
        notifier=notifier,
        state=state,
        index=index,
        recent=recent,
        events=EventCreationService(
            config.server_name,
            signing_key,
            event_store,
            state,
            writer,
            positions=positions,
            check_relation=RelationChecks(state, RelationStore(db)).check,
        ),
        dispatcher=dispatcher,
        writer=writer,
        positions=positions,
        starts_at=starts_at,
    )


@dataclass(frozen=True, slots=True)
class Local:
    accounts: AccountStore
    auth: AuthService
    account_data: AccountDataService
    visibility: VisibilityService
    typing: TypingService
    presence: PresenceService
    receipts: ReceiptService
    # Unread counts' read positions (a deployment's other processes drop them: issue 21).
    read_positions: ReadPositionCache
    push_rules: PushRulesService
    push_actions: PushActionsService
    sync_account_data: PushRulesAccountData
    pushers: PusherService
    pusher_pool: PusherPool
    # One for the server: it caches each user's memberships (push, /notifications, email).
    notifications: NotificationStore
    to_device: ToDeviceService
    device_lists: DeviceListService
    e2e_keys: E2eKeysService
    appservices: AppServiceRegistry
    appservice_auth: AppServiceAuth
    # The one HTTP client towards appservices, and their user and alias queries.
    appservice_client: AppServiceClient
    appservice_queries: AppServiceQueries


def build_local(config: Config, db: Database, timeline: Timeline) -> Local:
    """Accounts and devices, the sync streams beside the timeline, E2EE and push."""
    server_name = config.server_name
    state, notifier = timeline.state, timeline.notifier
    accounts = AccountStore(db)
    appservices = AppServiceRegistry(config.app_service_config_files, server_name)
    auth = AuthService(config, accounts)
    appservice_auth = AppServiceAuth(appservices, accounts)
    auth.on_deactivated.append(appservice_auth.on_deactivated)
    appservices.listeners.append(appservice_auth.on_reloaded)
    appservice_client = AppServiceClient()
    account_data = AccountDataService(AccountDataStore(db), state, notifier)
    presence = PresenceService(
        server_name, timeline.index, state, notifier, enabled=config.presence.enabled
    )
    timeline.dispatcher.listeners.append(presence.on_persisted)
    relations = RelationStore(db).relations_of
    receipts = ReceiptService(ReceiptStore(db), account_data, state, notifier, relations=relations)
    read_positions = ReadPositionCache(ThreadStore(db).read_positions)
    receipts.stored_hooks.append(read_positions.moved)

    push_rules = PushRulesService(PushRuleStore(db))
    users_with_pushers = UsersWithPushers()
    push_actions = PushActionsService(
        server_name,
        PushActionStore(db),
        state,
        push_rules,
        read_positions,
        account_data.ignored_users.of,
        users_with_pushers.view,
        relations=relations,
    )
    timeline.writer.add_pre_commit(push_actions.prepare)
    pusher_store = PusherStore(db)
    notifications = NotificationStore(db, lambda: notifier.current_token.events)
    pusher_pool = PusherPool(
        pusher_store,
        notifications,
        PushGatewayClient(
            tuple(
                ipaddress.ip_network(n, strict=False) for n in config.push.gateway_allowed_networks
            ),
            config.push.gateway_timeout,
        ),
        state,
        users_with_pushers,
        take_pushes=push_actions.take_pushes,
        actions_now=push_actions.actions_now,
        remote_invite_actions=push_actions.remote_invite_actions,
        memberships=timeline.index.memberships,
        unread_counts=push_actions.unread_counts,
        ignored_users=account_data.ignored_users.of,
        max_position=timeline.announced,
        max_concurrent_sends=config.push.max_concurrent_sends,
        include_content=config.push.include_content,
        elsewhere=timeline.written_elsewhere,
    )
    timeline.dispatcher.listeners.append(pusher_pool.on_persisted)
    receipts.read_listeners.append(pusher_pool.on_receipt)
    pushers = PusherService(
        pusher_store,
        ThreepidStore(db).get_owner,
        on_change=pusher_pool.on_pushers_changed,
        email_enabled=config.email.smtp_host is not None,
        max_pushers_per_user=config.push.max_pushers_per_user,
    )

    to_device = ToDeviceService(server_name, ToDeviceStore(db), notifier)
    device_lists = DeviceListService(
        server_name, DeviceListStore(db), timeline.index, state, notifier
    )
    e2e_keys = E2eKeysService(server_name, E2eKeyStore(db), auth, device_lists.notify_user_changed)
    auth.on_devices_deleted.append(to_device.on_devices_deleted)
    auth.on_device_created.append(device_lists.on_device_created)
    auth.on_device_renamed.append(device_lists.on_device_created)
    auth.on_devices_deleted.append(pushers.on_devices_deleted)
    auth.on_devices_deleted.append(e2e_keys.on_devices_deleted)
    # Last: clients woken by the change must no longer see the deleted devices' keys.
    auth.on_devices_deleted.append(device_lists.on_devices_deleted)
    return Local(
        accounts=accounts,
        auth=auth,
        account_data=account_data,
        visibility=VisibilityService(
            state, account_data.ignored_users.of, MembershipHistoryStore(db).latest_join
        ),
        typing=TypingService(notifier, state),
        presence=presence,
        receipts=receipts,
        read_positions=read_positions,
        push_rules=push_rules,
        push_actions=push_actions,
        sync_account_data=PushRulesAccountData(account_data, push_rules),
        pushers=pushers,
        pusher_pool=pusher_pool,
        notifications=notifications,
        to_device=to_device,
        device_lists=device_lists,
        e2e_keys=e2e_keys,
        appservices=appservices,
        appservice_auth=appservice_auth,
        appservice_client=appservice_client,
        appservice_queries=AppServiceQueries(appservices, appservice_client),
    )
