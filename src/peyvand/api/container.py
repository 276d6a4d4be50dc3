"""The services (and compliance services), built once in ``app.py`` and handed to the API
layer; it lives in ``api`` because it names both ``services`` and ``compliance``.

Plain attributes, no lookups by name: each handler reaches the one service it needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from peyvand.compliance.audit import AuditLog
from peyvand.compliance.disappearing import DisappearingMessages
from peyvand.compliance.erasure import AccountErasure
from peyvand.compliance.export import ComplianceExporter
from peyvand.compliance.legal_hold import LegalHolds
from peyvand.compliance.reports import ReportService
from peyvand.compliance.retention import RetentionService
from peyvand.config import Config
from peyvand.federation.keyring import Keyring
from peyvand.services.accounts.auth import AuthService
from peyvand.services.accounts.openid import OpenIdService
from peyvand.services.accounts.profile import ProfileService
from peyvand.services.accounts.registration import RegistrationService
from peyvand.services.accounts.threepids import ThreepidService
from peyvand.services.accounts.user_directory import UserDirectoryService
from peyvand.services.appservice.auth import AppServiceAuth
from peyvand.services.appservice.ping import AppServicePing
from peyvand.services.appservice.registry import AppServiceRegistry
from peyvand.services.appservice.thirdparty import ThirdPartyLookups
from peyvand.services.appservice.transactions import AppServiceTransactions
from peyvand.services.e2ee.device_lists import DeviceListService
from peyvand.services.e2ee.key_backup import KeyBackupService
from peyvand.services.e2ee.keys import E2eKeysService
from peyvand.services.e2ee.to_device import ToDeviceService
from peyvand.services.federation.invite_policy import InvitePolicyService
from peyvand.services.federation.service import FederationService
from peyvand.services.media.repository import MediaService
from peyvand.services.media.url_preview import UrlPreviewService
from peyvand.services.push.email.unsubscribe import EmailUnsubscribe
from peyvand.services.push.notifications import NotificationsService
from peyvand.services.push.pushers import PusherService
from peyvand.services.push.rules_api import PushRulesService
from peyvand.services.rooms.creation import RoomsService
from peyvand.services.rooms.directory import DirectoryService
from peyvand.services.rooms.hierarchy import SpaceHierarchyService
from peyvand.services.rooms.membership import MembershipService
from peyvand.services.rooms.policy_lists import PolicyListService
from peyvand.services.rooms.reads import RoomEventsService
from peyvand.services.rooms.relations import RelationsService
from peyvand.services.rooms.room_summary import RoomSummaryService
from peyvand.services.rooms.search import SearchService
from peyvand.services.rooms.server_notices import ServerNoticesService
from peyvand.services.rooms.state_events import StateEventService
from peyvand.services.rooms.threads import ThreadsService
from peyvand.services.rooms.timestamp_lookup import TimestampLookup
from peyvand.services.rooms.upgrade import RoomUpgradeService
from peyvand.services.sync.account_data import AccountDataService
from peyvand.services.sync.legacy import LegacySyncService
from peyvand.services.sync.presence import PresenceService
from peyvand.services.sync.receipts import ReceiptService
from peyvand.services.sync.sliding.service import SlidingSyncService
from peyvand.services.sync.sync import SyncService
from peyvand.services.sync.typing import TypingService
from peyvand.services.timeline.event_creation import EventCreationService
from peyvand.services.timeline.room_state import StateService


@dataclass
class Services:
    config: Config
    auth: AuthService
    registration: RegistrationService
    state: StateService
    events: EventCreationService
    rooms: RoomsService
    membership: MembershipService
    state_events: StateEventService
    room_upgrade: RoomUpgradeService
    room_events: RoomEventsService
    search: SearchService
    timestamp_lookup: TimestampLookup
    room_summary: RoomSummaryService
    space_hierarchy: SpaceHierarchyService
    threads: ThreadsService
    relations: RelationsService
    sync: SyncService
    sliding_sync: SlidingSyncService
    legacy_sync: LegacySyncService
    typing: TypingService
    presence: PresenceService
    receipts: ReceiptService
    account_data: AccountDataService
    push_rules: PushRulesService
    pushers: PusherService
    notifications: NotificationsService
    email_unsubscribe: EmailUnsubscribe
    threepids: ThreepidService
    profile: ProfileService
    server_notices: ServerNoticesService
    directory: DirectoryService
    user_directory: UserDirectoryService
    e2e_keys: E2eKeysService
    key_backup: KeyBackupService
    to_device: ToDeviceService
    device_lists: DeviceListService
    media: MediaService
    url_preview: UrlPreviewService
    keyring: Keyring
    federation: FederationService
    invite_policy: InvitePolicyService
    audit: AuditLog
    exporter: ComplianceExporter
    legal_holds: LegalHolds
    retention: RetentionService
    disappearing: DisappearingMessages
    erasure: AccountErasure
    reports: ReportService
    policy_lists: PolicyListService
    openid: OpenIdService
    appservices: AppServiceRegistry
    appservice_auth: AppServiceAuth
    thirdparty: ThirdPartyLookups
    appservice_ping: AppServicePing
    appservice_transactions: AppServiceTransactions
