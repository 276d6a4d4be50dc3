"""Composition root: builds storage, services and the web app from config.

The only module that names a concrete storage backend. Every component is built with all
it needs in its constructor (``peyvand/wiring/``, one builder per area, in dependency
order) and added to one ``Lifecycle``: started in that order, stopped in reverse.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from peyvand.api.admin import ADMIN_ROUTE_TABLES
from peyvand.api.client import CLIENT_ROUTE_TABLES
from peyvand.api.container import Services
from peyvand.api.federation import FEDERATION_ROUTE_TABLES
from peyvand.api.in_flight import InFlight
from peyvand.api.internal import INTERNAL_ROUTE_TABLES
from peyvand.api.media import MEDIA_ROUTE_TABLES
from peyvand.api.roles import primary_routes
from peyvand.api.server import build_web_app
from peyvand.config import Config, DatabaseConfig
from peyvand.events.signing import parse_signing_keys
from peyvand.services.accounts.openid import OpenIdService
from peyvand.services.accounts.registration import RegistrationService
from peyvand.services.accounts.user_directory import UserDirectoryService
from peyvand.services.appservice.ping import AppServicePing
from peyvand.services.appservice.thirdparty import ThirdPartyLookups
from peyvand.services.e2ee.key_backup import KeyBackupService
from peyvand.services.rooms.policy_lists import PolicyListService
from peyvand.services.sync.legacy import LegacySyncService
from peyvand.services.sync.stream_relay import StreamRelay
from peyvand.services.sync.sync import SyncService
from peyvand.services.timeline.room_holders import RoomHolders
from peyvand.storage.database import Database
from peyvand.storage.key_backup import KeyBackupStore
from peyvand.storage.migrations import run_migrations
from peyvand.storage.openid_tokens import OpenIdTokenStore
from peyvand.storage.registration_tokens import RegistrationTokenStore
from peyvand.wiring.appservice import AppServices, build_appservices
from peyvand.wiring.compliance import Compliance, build_compliance
from peyvand.wiring.email import Email, build_email
from peyvand.wiring.federation import Federation, Transport, build_federation, build_transport
from peyvand.wiring.leased import InstanceName, background_jobs, instance_name
from peyvand.wiring.lifecycle import Component, Hooks, Lifecycle
from peyvand.wiring.local import Local, Timeline, build_local, build_timeline
from peyvand.wiring.media import Media, build_media
from peyvand.wiring.metrics import build_observability
from peyvand.wiring.previews import Previews, build_previews
from peyvand.wiring.primary import PrimaryWriter, primary_writer
from peyvand.wiring.rooms import Rooms, build_rooms
from peyvand.wiring.sender_shards import stands_in_for_senders
from peyvand.wiring.server_notices import build_server_notices
from peyvand.wiring.sliding_sync import build_room_activity, build_sliding_sync
from peyvand.wiring.workers import build_workers

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

    return await SqliteDatabase.open(config.sqlite_path, cache_kib=config.sqlite_cache_kib)


async def create_app(config: Config) -> web.Application:
    """Open the database, migrate it, build every component and return the web app."""
    db = await open_database(config.database)
    applied = await run_migrations(db)
    if applied:
        logger.info("applied schema migrations %s", applied)
    signing_key = parse_signing_keys(config.signing_key_path.read_text(encoding="utf-8"))[0]

    timeline = await build_timeline(config, db, signing_key)
    local = build_local(config, db, timeline)
    transport = build_transport(config, db, signing_key, timeline.state)
    media = build_media(config, db, transport)
    policy_lists = PolicyListService(config.server_name, config.moderation, timeline.state)
    federation = build_federation(config, db, signing_key, timeline, local, transport, policy_lists)
    rooms = build_rooms(config, db, timeline, local, policy_lists, federation.remote)
    compliance = build_compliance(config, db, timeline, local, media, rooms)
    previews = build_previews(config, db, timeline, local, transport, federation, rooms)
    email = build_email(config, db, timeline, local, signing_key)
    appservices = build_appservices(config, db, timeline, local, rooms, federation)
    primary = primary_writer(config.workers, db)
    workers = build_workers(config, db, timeline, local, rooms, federation, transport, primary)
    observed = build_observability(
        config, db.pool_usage, timeline, local, transport, appservices, workers
    )

    services = _services(
        config,
        db,
        timeline,
        local,
        media,
        policy_lists,
        federation,
        transport,
        rooms,
        compliance,
        previews,
        email,
        appservices,
    )
    # The internal API between a deployment's processes only where there are several.
    internal = INTERNAL_ROUTE_TABLES if config.workers.enabled else []
    in_flight = InFlight()
    app = build_web_app(
        services,
        [
            *CLIENT_ROUTE_TABLES,
            *MEDIA_ROUTE_TABLES,
            *ADMIN_ROUTE_TABLES,
            *FEDERATION_ROUTE_TABLES,
            *internal,
        ],
        metrics=observed.metrics,
        health=observed.health,
        in_flight=in_flight,
        primary=None
        if primary is None
        else (primary.gate, primary_routes(CLIENT_ROUTE_TABLES, ADMIN_ROUTE_TABLES)),
    )
    claim = instance_name(config.workers, db)
    if claim is not None:
        observed.health.checks.append(claim.problem)
    lifecycle = _lifecycle(
        config,
        db,
        timeline,
        local,
        media,
        federation,
        transport,
        rooms,
        compliance,
        email,
        appservices,
        workers,
        claim,
        primary,
    )

    lifecycle.add("event loop lag", observed.metrics.loop_lag)

    async def start(_: web.Application) -> None:
        await lifecycle.start()
        observed.health.serving = True

    async def stop(_: web.Application) -> None:
        observed.health.serving = False
        # aiohttp has waited for the requests of the connections still open; one whose
        # client left may still be running, and must end before the database closes.
        await in_flight.close()
        await lifecycle.stop()

    async def answer_long_polls(_: web.Application) -> None:
        # Before aiohttp waits for the requests in flight: a waiting /sync would hold
        # the stop for its whole timeout.
        timeline.notifier.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(answer_long_polls)
    app.on_cleanup.append(stop)
    return app


def _lifecycle(
    config: Config,
    db: Database,
    timeline: Timeline,
    local: Local,
    media: Media,
    federation: Federation,
    transport: Transport,
    rooms: Rooms,
    compliance: Compliance,
    email: Email,
    appservices: AppServices,
    workers: list[tuple[str, Component]],
    claim: InstanceName | None,
    primary: PrimaryWriter | None,
) -> Lifecycle:
    """Every component with something to start or stop, in start-up order. Background
    jobs run in one process of a deployment at a time (``wiring.leased``). Every process
    with federation enabled makes its own requests to other servers (discovery and the
    client) and queues for them; the ``federation_sender`` processes send the queue,
    and what serves other servers' requests runs where ``federation_inbound`` does (one
    process for now: the loader keeps it with the event writer)."""
    lifecycle = Lifecycle()
    roles = config.workers
    add_job = background_jobs(config.workers, db, primary)
    lifecycle.add("database", Hooks(stop=db.close))
    if claim is not None:
        # Before anything that sends, writes or takes a lease: refuses a second process.
        lifecycle.add("instance name", claim)
    lifecycle.add("room state", Hooks(start=timeline.state.start))
    lifecycle.add("room index", Hooks(start=timeline.index.start))
    lifecycle.add("event creation", Hooks(start=timeline.events.start))
    if (
        federation.partial_state is not None
        and roles.has_role("event_writer")
        and len(roles.with_role("event_writer")) > 1
    ):
        # Several writers join with the full state and complete no room: refused before
        # anything joins the deployment while one joined with partial state is left.
        check = federation.partial_state.refuse_partial_rooms
        lifecycle.add("no partial-state rooms", Hooks(start=check))
    lifecycle.add("keyring", Hooks(stop=transport.keyring.close))
    if config.federation.enabled:
        lifecycle.add(
            "server discovery", Hooks(start=transport.resolver.start, stop=transport.resolver.close)
        )
        lifecycle.add(
            "federation client", Hooks(start=transport.client.start, stop=transport.client.close)
        )
        if stands_in_for_senders(roles):
            # The process holding a share of the destinations sends what every process
            # queues for them (``wiring.sender_shards``; another sending from the queue
            # would send its rows again).
            lifecycle.add("federation sender", transport.sender)
    lifecycle.add("event writer", Hooks(start=timeline.writer.start, stop=timeline.writer.stop))
    for name, component in workers:
        lifecycle.add(name, component)
    lifecycle.add("typing", local.typing)
    lifecycle.add("presence", local.presence)
    lifecycle.add("account data", Hooks(start=local.account_data.start))
    lifecycle.add("receipts", Hooks(start=local.receipts.start))
    lifecycle.add("to-device", Hooks(start=local.to_device.start))
    lifecycle.add("device lists", Hooks(start=local.device_lists.start))
    lifecycle.add("appservice bots", local.appservice_auth)
    lifecycle.add(
        "appservice client",
        Hooks(start=local.appservice_client.start, stop=local.appservice_client.close),
    )
    # After the client and the bots: catches up from each appservice's stored position.
    add_job(lifecycle, "appservice transactions", appservices.transactions, on_writer=True)
    if federation.edus is not None and roles.has_role("federation_inbound"):
        # Fetches the device lists that received EDUs marked stale.
        lifecycle.add("federation EDUs", federation.edus)
    add_job(lifecycle, "pushers", local.pusher_pool, on_writer=True)
    if email.mailer is not None:
        add_job(lifecycle, "email notifications", email.mailer)
    lifecycle.add(
        "push rules account data",
        Hooks(start=local.sync_account_data.start, stop=local.sync_account_data.stop),
    )
    lifecycle.add("media", media.media)
    lifecycle.add("URL previews", media.url_preview)
    if config.federation.enabled and roles.has_role("federation_inbound"):
        lifecycle.add("federation", federation.service)
    if (
        federation.partial_state is not None
        and roles.has_role("event_writer")
        and len(roles.with_role("event_writer")) < 2
    ):
        # Resumes completing the rooms joined with partial state (needs the client); it
        # stores the state it fetches.
        lifecycle.add("partial-state resync", federation.partial_state)
    add_job(lifecycle, "guest removal", rooms.guest_removal)
    # Joins in the background: start-up does not wait.
    add_job(lifecycle, "policy lists", rooms.policy_list_follower, on_writer=True)
    if roles.enabled:
        # Every process enforces the rules the follower's process joins the rooms for.
        lifecycle.add("policy rules", rooms.policy_rules)
    add_job(lifecycle, "search backfill", rooms.search_backfill)
    add_job(lifecycle, "retention", compliance.retention)
    add_job(lifecycle, "disappearing messages", compliance.disappearing)
    if primary is not None:
        # Last: starts the jobs above while this writer is the primary one.
        for _, component in workers:
            if isinstance(component, StreamRelay):
                # First: what the previous primary stored unannounced is taken as missed.
                primary.on_taken(component.catch_up)
        for stream in (local.account_data, local.receipts, local.to_device):
            primary.on_taken(stream.resume)
        lifecycle.add("primary event writer", primary)
    for name, component in workers:
        if isinstance(component, RoomHolders):
            # Last: this writer's rooms come back to it once it serves.
            lifecycle.add(f"{name}: serving", Hooks(start=component.serving))
    return lifecycle


def _services(
    config: Config,
    db: Database,
    timeline: Timeline,
    local: Local,
    media: Media,
    policy_lists: PolicyListService,
    federation: Federation,
    transport: Transport,
    rooms: Rooms,
    compliance: Compliance,
    previews: Previews,
    email: Email,
    appservices: AppServices,
) -> Services:
    """What the API layer reaches: each service, by name."""
    state = timeline.state
    activity = build_room_activity(timeline, local, config.server_name)
    return Services(
        config=config,
        auth=local.auth,
        registration=RegistrationService(
            config,
            local.accounts,
            local.auth,
            RegistrationTokenStore(db),
            rooms.guest_store,
            local.appservices,
        ),
        state=state,
        events=timeline.events,
        rooms=rooms.rooms,
        membership=rooms.membership,
        state_events=rooms.state_events,
        room_upgrade=rooms.room_upgrade,
        room_events=rooms.room_events,
        search=rooms.search,
        timestamp_lookup=previews.timestamp_lookup,
        room_summary=previews.room_summary,
        space_hierarchy=previews.space_hierarchy,
        threads=rooms.threads,
        relations=rooms.relations,
        sync=SyncService(
            rooms.member_store,
            timeline.index,
            state,
            rooms.room_events,
            timeline.notifier,
            local.typing,
            local.receipts,
            local.sync_account_data,
            activity.unread.sections,
            local.to_device,
            local.device_lists,
            local.e2e_keys,
            local.account_data.ignored_users.of,
            remote_invites=timeline.remote_invites,
            presence=local.presence,
            partial_state=federation.partial_state,
        ),
        sliding_sync=build_sliding_sync(
            db,
            timeline,
            local,
            activity,
            rooms.room_events,
            rooms.member_store,
            config.server_name,
            federation.partial_state,
            max_timeline_events=config.sliding_sync.max_timeline_events,
        ),
        legacy_sync=LegacySyncService(
            timeline.event_store,
            timeline.index,
            state,
            rooms.room_events,
            timeline.notifier,
            local.account_data,
            local.receipts,
            presence=local.presence,
        ),
        typing=local.typing,
        presence=local.presence,
        receipts=local.receipts,
        account_data=local.account_data,
        push_rules=local.push_rules,
        pushers=local.pushers,
        notifications=rooms.notifications,
        email_unsubscribe=email.unsubscribe,
        threepids=email.threepids,
        profile=rooms.profile,
        server_notices=build_server_notices(config, db, timeline, local, rooms),
        directory=rooms.directory,
        user_directory=UserDirectoryService(config.server_name, rooms.directory_store),
        e2e_keys=local.e2e_keys,
        key_backup=KeyBackupService(KeyBackupStore(db)),
        to_device=local.to_device,
        device_lists=local.device_lists,
        media=media.media,
        url_preview=media.url_preview,
        keyring=transport.keyring,
        federation=federation.service,
        invite_policy=federation.invite_policy,
        audit=compliance.audit,
        legal_holds=compliance.legal_holds,
        retention=compliance.retention,
        disappearing=compliance.disappearing,
        erasure=compliance.erasure,
        exporter=compliance.exporter,
        reports=compliance.reports,
        policy_lists=policy_lists,
        openid=OpenIdService(config.server_name, OpenIdTokenStore(db)),
        appservices=local.appservices,
        appservice_auth=local.appservice_auth,
        thirdparty=ThirdPartyLookups(local.appservices, local.appservice_client),
        appservice_ping=AppServicePing(local.appservice_client),
        appservice_transactions=appservices.transactions,
    )
