"""Composition root: builds storage, services and the web app from config.

The only module that names a concrete storage backend. Owns start-up and shut-down.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from peyvand.api.admin import ADMIN_ROUTE_TABLES
from peyvand.api.client import CLIENT_ROUTE_TABLES
from peyvand.api.container import Services
from peyvand.api.federation import FEDERATION_ROUTE_TABLES
from peyvand.api.media import MEDIA_ROUTE_TABLES
from peyvand.api.server import build_web_app
from peyvand.compliance.audit import AuditLog
from peyvand.compliance.disappearing import DisappearingMessages
from peyvand.compliance.erasure import AccountErasure
from peyvand.compliance.export import ComplianceExporter
from peyvand.compliance.legal_hold import HeldQuery, LegalHolds
from peyvand.compliance.purge import HistoryPurger
from peyvand.compliance.reports import ReportService
from peyvand.compliance.retention import RetentionService
from peyvand.config import Config, DatabaseConfig
from peyvand.events.pdu import Pdu
from peyvand.events.signing import parse_signing_keys
from peyvand.federation.client import FederationClient
from peyvand.federation.discovery import ServerResolver
from peyvand.federation.keyring import Keyring
from peyvand.federation.policy import ServerPolicy
from peyvand.federation.sender import FederationSender
from peyvand.media.files import MediaFiles
from peyvand.services.accounts.auth import AuthService
from peyvand.services.accounts.profile import ProfileService
from peyvand.services.accounts.registration import RegistrationService
from peyvand.services.accounts.user_directory import UserDirectoryService
from peyvand.services.e2ee.device_lists import DeviceListService
from peyvand.services.e2ee.key_backup import KeyBackupService
from peyvand.services.e2ee.keys import E2eKeysService
from peyvand.services.e2ee.to_device import ToDeviceService
from peyvand.services.federation.edus import FederationEdus
from peyvand.services.federation.invite_policy import InvitePolicyService
from peyvand.services.federation.outbound_join import RemoteJoiner
from peyvand.services.federation.queries import RemoteQueries
from peyvand.services.federation.received_events import FederationEventHandler
from peyvand.services.federation.server import (
    ClientRemoteEvents,
    FederationService,
    load_federation_pdus,
)
from peyvand.services.media.remote import RemoteMediaFetcher
from peyvand.services.media.repository import MediaService
from peyvand.services.media.url_preview import UrlPreviewService
from peyvand.services.push.account_data import PushRulesAccountData
from peyvand.services.push.actions import PushActionsService
from peyvand.services.push.pushers import PusherService
from peyvand.services.push.rules_api import PushRulesService
from peyvand.services.rooms.creation import RoomsService
from peyvand.services.rooms.directory import DirectoryService
from peyvand.services.rooms.guest_access import GuestAccess
from peyvand.services.rooms.membership import MembershipService
from peyvand.services.rooms.policy_list_follower import PolicyListFollower
from peyvand.services.rooms.policy_lists import PolicyListService
from peyvand.services.rooms.reads import RoomEventsService
from peyvand.services.rooms.state_events import StateEventService
from peyvand.services.rooms.upgrade import RoomUpgradeService
from peyvand.services.rooms.visibility import VisibilityService
from peyvand.services.sync.account_data import AccountDataService
from peyvand.services.sync.legacy import LegacySyncService
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.presence import PresenceService
from peyvand.services.sync.receipts import ReceiptService
from peyvand.services.sync.streams import Stream, StreamToken
from peyvand.services.sync.sync import SyncService
from peyvand.services.sync.typing import TypingService
from peyvand.services.timeline.event_creation import EventCreationService
from peyvand.services.timeline.event_dispatch import EventDispatcher
from peyvand.services.timeline.event_writer import EventWriter
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.account_data import AccountDataStore
from peyvand.storage.accounts import AccountStore
from peyvand.storage.audit import AuditStore
from peyvand.storage.compliance_reads import ComplianceReads
from peyvand.storage.device_lists import DeviceListStore
from peyvand.storage.directory import DirectoryStore
from peyvand.storage.e2e_keys import E2eKeyStore
from peyvand.storage.events import EventStore
from peyvand.storage.federation_inbox import FederationInboxStore
from peyvand.storage.federation_outbox import FederationOutboxStore
from peyvand.storage.guests import GuestStore
from peyvand.storage.key_backup import KeyBackupStore
from peyvand.storage.legal_holds import LegalHoldStore
from peyvand.storage.media import MediaStore
from peyvand.storage.migrations import run_migrations
from peyvand.storage.purge import PurgeCandidate, PurgeStore
from peyvand.storage.push_actions import PushActionStore
from peyvand.storage.push_rules import PushRuleStore
from peyvand.storage.pushers import PusherStore
from peyvand.storage.receipts import ReceiptStore
from peyvand.storage.registration_tokens import RegistrationTokenStore
from peyvand.storage.remote_devices import RemoteDeviceStore
from peyvand.storage.remote_invites import InvitePolicyStore, RemoteInviteStore
from peyvand.storage.reports import ReportStore
from peyvand.storage.rooms import RoomMemberStore
from peyvand.storage.server_keys import ServerKeyStore
from peyvand.storage.to_device import ToDeviceStore
from peyvand.types import EventID, JsonDict, RoomID, UserID

if TYPE_CHECKING:
    from peyvand.storage.postgres import PostgresDatabase
    from peyvand.storage.sqlite import SqliteDatabase

logger = logging.getLogger(__name__)


async def open_database(config: DatabaseConfig) -> SqliteDatabase | PostgresDatabase:
    """The configured backend; only its driver is imported (asyncpg costs memory)."""
    if config.is_postgres:
        from peyvand.storage.postgres import PostgresDatabase

        return await PostgresDatabase.open(config.url)
    from peyvand.storage.sqlite import SqliteDatabase

    return await SqliteDatabase.open(config.sqlite_path)


async def create_app(config: Config) -> web.Application:
    """Open the database, migrate it, wire every service and return the web app."""
    db = await open_database(config.database)
    applied = await run_migrations(db)
    if applied:
        logger.info("applied schema migrations %s", applied)
    signing_key = parse_signing_keys(config.signing_key_path.read_text(encoding="utf-8"))[0]
    server_name = config.server_name

    accounts = AccountStore(db)
    event_store = EventStore(db)
    member_store = RoomMemberStore(db)

    auth = AuthService(config, accounts)
    notifier = Notifier(StreamToken(events=await event_store.get_max_stream_ordering()))
    state = StateService(event_store, event_cache_size=config.caches.events)
    remote_invites = RemoteInviteStore(db)
    index = RoomIndex(event_store, remote_invites)
    account_data = AccountDataService(AccountDataStore(db), state, notifier)
    visibility = VisibilityService(state, account_data.ignored_users.of)
    events = EventCreationService(server_name, signing_key, event_store, state)
    dispatcher = EventDispatcher(server_name, state, index, notifier)
    writer = EventWriter(db, event_store, dispatcher.on_persisted, dispatcher.on_failed)
    room_events = RoomEventsService(
        event_store, state, visibility, lambda: notifier.current_token.events
    )
    typing = TypingService(notifier, state)
    presence = PresenceService(server_name, index, state, notifier, enabled=config.presence.enabled)
    dispatcher.listeners.append(presence.on_persisted)
    receipts = ReceiptService(ReceiptStore(db), account_data, state, notifier)
    profile = ProfileService(server_name, accounts, event_store, state, events)
    directory_store = DirectoryStore(db)
    directory = DirectoryService(server_name, directory_store, event_store, state, events)
    rooms = RoomsService(server_name, events, event_store, profile.profile_of)
    rooms.use_directory(directory.resolve_alias, directory.create_alias_for_new_room)

    push_rules = PushRulesService(PushRuleStore(db))
    push_actions = PushActionsService(server_name, PushActionStore(db), state, push_rules, receipts)
    writer.add_pre_commit(push_actions.prepare)
    sync_account_data = PushRulesAccountData(account_data, push_rules)
    to_device = ToDeviceService(server_name, ToDeviceStore(db), notifier)
    device_lists = DeviceListService(server_name, DeviceListStore(db), index, state, notifier)
    auth.on_devices_deleted.append(to_device.on_devices_deleted)
    auth.on_device_created.append(device_lists.on_device_created)
    auth.on_device_renamed.append(device_lists.on_device_created)
    pushers = PusherService(PusherStore(db))
    auth.on_devices_deleted.append(pushers.on_devices_deleted)
    e2e_keys = E2eKeysService(server_name, E2eKeyStore(db), auth, device_lists.notify_user_changed)
    auth.on_devices_deleted.append(e2e_keys.on_devices_deleted)
    # Last: clients woken by the change must no longer see the deleted devices' keys.
    auth.on_devices_deleted.append(device_lists.on_devices_deleted)
    media_files = MediaFiles(config.media_dir)
    media = MediaService(
        server_name,
        config.media,
        MediaStore(db),
        media_files,
        admin_contact=config.admin_contact,
    )
    url_preview = UrlPreviewService(config.media, media)

    federation_config = config.federation
    policy = ServerPolicy(federation_config.allowed_servers, federation_config.denied_servers)
    resolver = ServerResolver(test_network=federation_config.test_network)
    client = FederationClient(
        server_name,
        signing_key,
        resolver=resolver,
        policy=policy,
        test_network=federation_config.test_network,
    )
    keyring = Keyring(
        server_name,
        signing_key,
        ServerKeyStore(db),
        client,
        trusted_key_servers=federation_config.trusted_key_servers,
        key_validity_period_ms=federation_config.key_validity_period * 1000,
    )
    outbox = FederationOutboxStore(db)

    async def user_exists(user_id: UserID) -> bool:
        return await accounts.get_user(user_id) is not None

    def on_remote_membership(
        user_id: UserID, room_id: RoomID, membership: str, stream: int
    ) -> None:
        index.note_remote_invite(user_id, room_id, membership, stream)
        notifier.advance(Stream.EVENTS, stream, {user_id})

    sender = FederationSender(
        server_name,
        outbox,
        client,
        functools.partial(load_federation_pdus, state),
        allows=policy.allows,
    )

    async def check_signatures(pdus: Sequence[Pdu]) -> list[bool]:
        return await federation.check_signatures(pdus)

    handler = FederationEventHandler(
        state,
        event_store,
        check_signatures,
        ClientRemoteEvents(client),
        events.allocate_stream,
        events.persist,
        events.allocate_backfill_stream,
        server_name,
    )
    federation = FederationService(
        server_name,
        client,
        keyring,
        sender,
        policy,
        state,
        event_store,
        outbox,
        FederationInboxStore(db),
        handler,
        RemoteJoiner(
            server_name,
            signing_key,
            client,
            state,
            event_store,
            check_signatures,
            events.allocate_stream,
            events.persist,
        ),
        remote_invites,
        signing_key,
        events.allocate_stream,
        user_exists,
        on_remote_membership,
    )
    invite_policy = InvitePolicyService(
        config.interconnect, InvitePolicyStore(db), remote_invites, account_data
    )
    federation.use_invite_policy(invite_policy)
    edus: FederationEdus | None = None
    if federation_config.enabled:

        async def fetch_user_devices(destination: str, user_id: UserID) -> Any:
            path = f"/_matrix/federation/v1/user/devices/{quote(user_id, safe='')}"
            return await client.get_json(destination, path, timeout=10)

        async def claim_remote_keys(destination: str, body: JsonDict) -> Any:
            path = "/_matrix/federation/v1/user/keys/claim"
            return await client.post_json(destination, path, body, timeout=10)

        edus = FederationEdus(
            server_name,
            state,
            index,
            sender,
            typing,
            receipts,
            to_device,
            device_lists,
            e2e_keys,
            RemoteDeviceStore(db),
            fetch_user_devices=fetch_user_devices,
            claim_keys=claim_remote_keys,
            presence=presence,
        )
        federation.use_edus(edus)
        media.use_remote(RemoteMediaFetcher(client, media_files).fetch)
        room_events.use_backfill(handler.backfill)
        directory.use_federation(federation.query_directory)
        remote_queries = RemoteQueries(client, federation.allows)
        profile.use_federation(remote_queries.profile)
        directory.use_remote_room_lists(remote_queries.public_rooms)
        writer.add_pre_commit(federation.prepare_outbound)
        dispatcher.listeners.append(federation.on_persisted)

    membership = MembershipService(
        events,
        state,
        member_store,
        profile.profile_of,
        server_name,
        federation if federation_config.enabled else None,
    )
    policy_lists = PolicyListService(server_name, config.moderation, state)
    policy_list_follower = PolicyListFollower(
        policy_lists, accounts, membership.join, directory.get_alias
    )
    membership.use_policy_lists(policy_lists)
    guest_store = GuestStore(db)
    guest_access = GuestAccess(server_name, guest_store, state)
    guest_access.use_leave(membership.leave)
    membership.use_guest_access(guest_access)
    dispatcher.listeners.append(guest_access.on_persisted)
    if federation_config.enabled:
        rooms.use_membership(membership.invite)
    rooms.use_policy_lists(policy_lists)
    federation.use_policy_lists(policy_lists)
    dispatcher.listeners.append(policy_list_follower.on_persisted)

    audit = AuditLog(AuditStore(db))
    legal_holds = LegalHolds(LegalHoldStore(db), audit)

    async def held(candidates: Sequence[PurgeCandidate]) -> set[EventID]:
        queries = [
            HeldQuery(c.event_id, c.room_id, c.sender, c.origin_server_ts) for c in candidates
        ]
        return {EventID(e) for e in await legal_holds.held(queries)}

    purge_store = PurgeStore(db)
    # Media a purge or an erasure releases goes unless an event names it by then.
    delete_unnamed_media = functools.partial(media.delete, unless_named=True)
    purger = HistoryPurger(purge_store, state, held, delete_unnamed_media)
    retention = RetentionService(config.retention, purge_store, state, purger)
    disappearing = DisappearingMessages(config.disappearing, purge_store, state, purger)
    writer.add_pre_commit(disappearing.prepare)
    erasure = AccountErasure(
        auth,
        membership,
        accounts,
        event_store,
        remote_invites,
        purge_store,
        purger,
        held,
        legal_holds.user_held,
        delete_unnamed_media,
    )
    services = Services(
        config=config,
        auth=auth,
        registration=RegistrationService(
            config, accounts, auth, RegistrationTokenStore(db), guest_store
        ),
        state=state,
        events=events,
        rooms=rooms,
        membership=membership,
        state_events=StateEventService(events, state, membership, directory.get_alias),
        room_upgrade=RoomUpgradeService(
            server_name,
            events,
            state,
            event_store,
            directory_store,
            push_rules,
            account_data,
            profile.profile_of,
        ),
        room_events=room_events,
        sync=SyncService(
            event_store,
            member_store,
            index,
            state,
            room_events,
            notifier,
            typing,
            receipts,
            sync_account_data,
            push_actions.unread_counts,
            to_device,
            device_lists,
            e2e_keys,
            account_data.ignored_users.of,
            remote_invites=remote_invites,
            presence=presence,
        ),
        legacy_sync=LegacySyncService(
            event_store,
            index,
            state,
            room_events,
            notifier,
            account_data,
            receipts,
            presence=presence,
        ),
        typing=typing,
        presence=presence,
        receipts=receipts,
        account_data=account_data,
        push_rules=push_rules,
        pushers=pushers,
        profile=profile,
        directory=directory,
        user_directory=UserDirectoryService(server_name, directory_store),
        e2e_keys=e2e_keys,
        key_backup=KeyBackupService(KeyBackupStore(db)),
        to_device=to_device,
        device_lists=device_lists,
        media=media,
        url_preview=url_preview,
        keyring=keyring,
        federation=federation,
        invite_policy=invite_policy,
        audit=audit,
        legal_holds=legal_holds,
        retention=retention,
        disappearing=disappearing,
        erasure=erasure,
        exporter=ComplianceExporter(ComplianceReads(db), media_files, audit),
        reports=ReportService(ReportStore(db), state),
        policy_lists=policy_lists,
    )
    app = build_web_app(
        services,
        [*CLIENT_ROUTE_TABLES, *MEDIA_ROUTE_TABLES, *ADMIN_ROUTE_TABLES, *FEDERATION_ROUTE_TABLES],
    )

    async def start(_: web.Application) -> None:
        await state.start()
        await index.start()
        await events.start(writer)
        if federation_config.enabled:
            await resolver.start()
            await client.start()
            await sender.start()  # before the writer: its pre-commit hook allocates seqs
        writer.start()
        await typing.start()
        await presence.start()
        await account_data.start()
        await receipts.start()
        await to_device.start()
        await device_lists.start()
        if edus is not None:
            await edus.start()
        push_actions.start()
        sync_account_data.start()
        await media.start()
        await url_preview.start()
        if federation_config.enabled:
            await federation.start()
        await policy_list_follower.start()  # joins in the background: start-up does not wait
        retention.start()
        disappearing.start()

    async def stop(_: web.Application) -> None:
        await disappearing.stop()
        await retention.stop()
        await policy_list_follower.stop()
        await guest_access.stop()
        if edus is not None:
            await edus.stop()
        if federation_config.enabled:
            await federation.stop()
            await sender.stop()
            await client.close()
            await resolver.close()
        await keyring.close()
        await url_preview.stop()
        await media.stop()
        await writer.stop()
        await push_actions.stop()
        await sync_account_data.stop()
        await typing.stop()
        await presence.stop()
        await db.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app
