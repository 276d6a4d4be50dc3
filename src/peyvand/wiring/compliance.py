"""Compliance: the audit log, legal holds, history purges (retention, disappearing
messages, account erasure), exports and reports."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from peyvand.compliance.audit import AuditLog
from peyvand.compliance.disappearing import DisappearingMessages
from peyvand.compliance.erasure import AccountErasure
from peyvand.compliance.export import ComplianceExporter
from peyvand.compliance.legal_hold import HeldQuery, LegalHolds
from peyvand.compliance.purge import HistoryPurger
from peyvand.compliance.reports import ReportService
from peyvand.compliance.retention import RetentionService
from peyvand.config import Config
from peyvand.storage.audit import AuditStore
from peyvand.storage.compliance_reads import ComplianceReads
from peyvand.storage.database import Database
from peyvand.storage.legal_holds import LegalHoldStore
from peyvand.storage.openid_tokens import OpenIdTokenStore
from peyvand.storage.profile_fields import ProfileFieldStore
from peyvand.storage.purge import PurgeCandidate, PurgeStore
from peyvand.storage.reports import ReportStore
from peyvand.types import EventID
from peyvand.wiring.local import Local, Timeline
from peyvand.wiring.media import Media
from peyvand.wiring.rooms import Rooms


@dataclass(frozen=True, slots=True)
class Compliance:
    audit: AuditLog
    legal_holds: LegalHolds
    retention: RetentionService
    disappearing: DisappearingMessages
    erasure: AccountErasure
    exporter: ComplianceExporter
    reports: ReportService


def build_compliance(
    config: Config, db: Database, timeline: Timeline, local: Local, media: Media, rooms: Rooms
) -> Compliance:
    state = timeline.state
    audit = AuditLog(AuditStore(db))
    legal_holds = LegalHolds(LegalHoldStore(db), audit)

    async def held(candidates: Sequence[PurgeCandidate]) -> set[EventID]:
        queries = [
            HeldQuery(c.event_id, c.room_id, c.sender, c.origin_server_ts) for c in candidates
        ]
        return {EventID(e) for e in await legal_holds.held(queries)}

    purge_store = PurgeStore(db)
    # Media a purge or an erasure releases goes unless an event names it by then.
    delete_unnamed_media = functools.partial(media.media.delete, unless_named=True)
    purger = HistoryPurger(purge_store, state, held, delete_unnamed_media)
    disappearing = DisappearingMessages(config.disappearing, purge_store, state, purger)
    timeline.writer.add_pre_commit(disappearing.prepare)
    return Compliance(
        audit=audit,
        legal_holds=legal_holds,
        retention=RetentionService(config.retention, purge_store, state, purger),
        disappearing=disappearing,
        erasure=AccountErasure(
            local.auth,
            rooms.membership,
            local.accounts,
            timeline.event_store,
            timeline.remote_invites,
            purge_store,
            purger,
            held,
            legal_holds.user_held,
            delete_unnamed_media,
            ProfileFieldStore(db).delete_all,
            OpenIdTokenStore(db).delete_all,
        ),
        exporter=ComplianceExporter(ComplianceReads(db), media.files, audit),
        reports=ReportService(ReportStore(db), state),
    )
