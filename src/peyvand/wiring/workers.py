"""What a process of a multi-process deployment adds (issue 21): the bus between the
processes, the events stream's publisher (an event writer) or follower (every other
process), the relay of the other streams, typing and presence shared by their
services, and event creation forwarded to the event writer from every other process.
Nothing at all for a single process."""

from __future__ import annotations

import logging
from collections.abc import Set as AbstractSet
from pathlib import Path

from peyvand.config import Config, WorkersConfig
from peyvand.federation.worker_client import WorkerClient, read_secret
from peyvand.services.federation.forwarded_edus import PrimaryEdus
from peyvand.services.federation.forwarded_memberships import ForwardedMemberships
from peyvand.services.federation.forwarded_pdus import ForwardedPdus
from peyvand.services.federation.partial_state_follower import PartialStateFollower
from peyvand.services.sync.cache_relay import TOKEN_SECONDS, CacheRelay
from peyvand.services.sync.stream_relay import StreamRelay
from peyvand.services.sync.streams import Stream
from peyvand.services.timeline.absent_writers import AbsentWriters, commit_fence
from peyvand.services.timeline.event_dispatch import HeldAnnouncements
from peyvand.services.timeline.event_follower import (
    EventPositionPublisher,
    EventStreamFollower,
    OwnCommits,
)
from peyvand.services.timeline.forwarding import ForwardedWrites, StreamWaiter
from peyvand.services.timeline.room_holders import RoomHolders
from peyvand.services.timeline.room_owners import RoomOwners
from peyvand.storage.bus import Bus
from peyvand.storage.database import Database
from peyvand.storage.leases import LeaseStore
from peyvand.storage.partial_state import PartialStateStore
from peyvand.storage.receipts import ReceiptRow
from peyvand.storage.room_writers import RoomWriterStore
from peyvand.storage.stream_positions import StreamPositionStore
from peyvand.types import RoomID, UserID
from peyvand.wiring.federation import Federation, Transport
from peyvand.wiring.lifecycle import Component
from peyvand.wiring.local import Local, Timeline
from peyvand.wiring.primary import PrimaryWriter
from peyvand.wiring.rooms import Rooms
from peyvand.wiring.sender_shards import sender_shards, stands_in_for_senders

logger = logging.getLogger(__name__)


def build_workers(
    config: Config,
    db: Database,
    timeline: Timeline,
    local: Local,
    rooms: Rooms,
    federation: Federation,
    transport: Transport,
    primary: PrimaryWriter | None,
) -> list[tuple[str, Component]]:
    """The components to start after the event writer, in order (none for one process)."""
    workers = config.workers
    instance, secret_path = workers.instance, workers.secret_path
    if not workers.enabled or instance is None or secret_path is None:
        return []
    # Only a deployment loads the PostgreSQL bus (and asyncpg with it, on SQLite too).
    from peyvand.storage.bus import PostgresBus

    bus = PostgresBus(config.database.url, instance)
    positions = StreamPositionStore(db)
    relay = StreamRelay(bus, timeline.notifier, instance)
    # In each process's memory: carried with their data by their services.
    relay.exclude(Stream.TYPING)
    relay.exclude(Stream.PRESENCE)
    local.typing.replicate(bus, instance)
    # Presence changes made anywhere, and joins, reach other servers from the process
    # sending to the first share of the destinations (which hands other processes'
    # destinations to them).
    senders = [i.name for i in workers.with_role("federation_sender")]
    shards: list[tuple[str, Component]] = []
    if config.federation.enabled:
        local.presence.replicate(bus, instance, tells_servers=False)
        # Every process queues for other servers; the sender processes send, each to
        # the shares of the destinations it holds: its own, and a stopped sender's,
        # which the event writers may take too.
        sends = stands_in_for_senders(workers)
        transport.sender.replicate(bus, sends=sends, shards=len(senders))
        if sends:
            shards = sender_shards(
                senders, instance, transport.sender, local.presence, LeaseStore(db)
            )
    else:
        local.presence.replicate(bus, instance, tells_servers=instance == senders[0])
    relay.on_refresh(Stream.TO_DEVICE, local.to_device.written_elsewhere)
    # What this process missed of the others' messages is found in the stored positions.
    relay.track(Stream.TO_DEVICE, local.to_device.stored_position)
    relay.track(Stream.DEVICE_LISTS, local.device_lists.stored_position)
    relay.track(Stream.ACCOUNT_DATA, local.account_data.stored_position)
    relay.track(Stream.RECEIPTS, local.receipts.stored_position)
    _relay_receipt_rooms(relay, timeline, local)
    caches = _relay_caches(
        CacheRelay(bus, instance, bus.sent), timeline, local, rooms, relay, federation
    )
    writers = [i.name for i in workers.with_role("event_writer")]
    if workers.has_role("event_writer"):
        publisher = EventPositionPublisher(
            bus, positions, instance, lambda: timeline.notifier.current_token.events,
            timeline.positions, timeline.event_store, writers,
        )  # fmt: skip
        timeline.dispatcher.advanced.append(publisher.advanced)
        if federation.partial_state is not None:
            # Before the completion advances the partial state stream (the bus's order).
            federation.partial_state.completed_hooks.append(
                lambda room_id: caches.changed("partial_state", [room_id])
            )
        shared: list[tuple[str, Component]] = []
        if len(writers) > 1:
            # The others' commits are followed; this one's are told among them. Sends to
            # the others' rooms go to them; a writer's rooms are taken over while it is
            # down.
            held = HeldAnnouncements()
            timeline.dispatcher.held = held
            own = OwnCommits(instance, timeline.positions, held)
            follower = _follower(bus, positions, timeline, writers, own)
            publisher.published.append(follower.published)
            owners = RoomOwners(tuple(writers))
            waiter = _waiter(timeline)
            forwarded, links = _forwarding(workers, instance, secret_path, owners, waiter)
            timeline.events.share_rooms(forwarded, owners, instance)
            # Received PDUs of the others' rooms are theirs to store, and memberships in
            # their rooms on other servers theirs to make.
            federation.received.forward_rooms(ForwardedPdus(forwarded, owners, instance))
            federation.outbound_membership.forward_rooms(
                ForwardedMemberships(forwarded, owners, instance)
            )

            async def catch_up() -> None:
                await waiter.wait_for(await publisher.hear_stored())

            if federation.edus is not None and primary is not None:
                gate = primary.gate
                federation.edus.forward_to_primary(
                    PrimaryEdus(forwarded, writers, lambda: gate.held), catch_up
                )

            def forget(writers_rooms: frozenset[str]) -> None:
                timeline.state.forget_rooms(lambda room_id: owners.shard(room_id) in writers_rooms)

            holders = RoomHolders(
                bus, RoomWriterStore(db), owners, instance=instance, catch_up=catch_up,
                forget=forget,
            )  # fmt: skip
            others = [w for w in writers if w != instance]
            absent = AbsentWriters(bus, positions, others, lambda: publisher.newest)
            timeline.writer.add_pre_commit(commit_fence(instance, owners))
            shared += [
                ("events follower", follower), *links, ("room writers", holders),
                ("absent writers", absent),
            ]  # fmt: skip
        return [
            ("bus", bus), ("events position", publisher), *shared, ("stream relay", relay),
            ("cache relay", caches), *shards,
        ]  # fmt: skip
    # Events created here (a write sent here, a background job's) are a writer's to
    # number and store: asked over its internal API, then awaited here (read-your-writes).
    owners = RoomOwners(tuple(writers))
    forwarded, links = _forwarding(workers, instance, secret_path, owners, _waiter(timeline))
    timeline.events.forward_writes(
        forwarded, owners, f"{instance} does not write events: the deployment's event writers do"
    )
    # Received PDUs too, for a process taking in other servers' transactions, and
    # memberships in rooms on other servers.
    federation.received.forward_rooms(ForwardedPdus(forwarded, owners, instance))
    federation.outbound_membership.forward_rooms(ForwardedMemberships(forwarded, owners, instance))
    if federation.edus is not None:
        # Receipts and to-device messages go to the primary writer's streams.
        federation.edus.forward_to_primary(PrimaryEdus(forwarded, writers, lambda: False))
    follower = _follower(bus, positions, timeline, writers, None)
    partial: list[tuple[str, Component]] = []
    if len(writers) > 1:
        # Where each writer's rooms are written now (one taken over while it is down).
        links.append(("room writers", RoomHolders(bus, RoomWriterStore(db), owners)))
    if federation.partial_state is not None:
        # The writer completes the rooms joined with partial state; this process follows.
        resync, partial_store = federation.partial_state, PartialStateStore(db)
        rooms_followed = PartialStateFollower(
            config.server_name, resync.rooms, partial_store, timeline.state, timeline.notifier,
            resync.state_rewritten,
        )  # fmt: skip
        relay.track(Stream.PARTIAL_STATE, partial_store.max_completion)
        caches.register("partial_state", rooms_followed.completed_elsewhere)
        follower.before_announce.append(rooms_followed.before_announce)
        partial.append(("partial-state rooms", rooms_followed))
    return [
        ("bus", bus), *partial, ("events follower", follower), ("stream relay", relay),
        ("cache relay", caches), *links, *shards,
    ]  # fmt: skip


def _waiter(timeline: Timeline) -> StreamWaiter:
    """Waits until this process announced a position of the events stream."""
    waiter = StreamWaiter(lambda: timeline.notifier.current_token.events)
    timeline.dispatcher.listeners.append(waiter.on_announced)
    return waiter


def _forwarding(
    workers: WorkersConfig,
    instance: str,
    secret_path: Path,
    owners: RoomOwners,
    waiter: StreamWaiter,
) -> tuple[ForwardedWrites, list[tuple[str, Component]]]:
    """Event creation done by the other event writers over their internal API, answered
    once this process has announced what they wrote (read-your-writes); the links."""
    secret = read_secret(secret_path)
    writers = workers.with_role("event_writer")
    links = {w.name: WorkerClient(w.url, secret) for w in writers if w.name != instance}
    components: list[tuple[str, Component]] = [
        (f"event writer link {name}", link) for name, link in links.items()
    ]
    return ForwardedWrites(links, owners, waiter), components


def _relay_caches(
    caches: CacheRelay,
    timeline: Timeline,
    local: Local,
    rooms: Rooms,
    relay: StreamRelay,
    federation: Federation,
) -> CacheRelay:
    """Each process tells the others what it changed of the caches they keep, and drops
    theirs (issue 21, "Caches"): a token revoked on the writer stops working on a reader
    at once (the revocation answers once the message is sent, or once the reader's copy
    has expired: ``TOKEN_SECONDS``); events purged or erased
    anywhere are no longer served from any process's event cache; push rules, read
    receipts (unread counts), ignored users, one-time key counts, device list changes and
    other servers' users' device lists (updated by their servers' EDUs, or fetched)
    written there are read again by the next request here."""
    state = timeline.state
    state.on_forgotten.append(lambda event_ids: caches.changed("events", event_ids))
    caches.register("events", state.forgotten_elsewhere)
    auth, push_rules, keys = local.auth, local.push_rules, local.e2e_keys

    # A token read here is trusted for TOKEN_SECONDS; a revocation answers once the
    # others were told, or once the copies they had when it was committed expired.
    auth.read_tokens_again_after(TOKEN_SECONDS)

    async def tokens_revoked(user_id: UserID) -> None:
        if not await caches.delivered("tokens", [user_id], TOKEN_SECONDS):
            logger.error(
                "the revocation of %s's tokens was not sent within %.0f s: the other "
                "processes refuse them from now on, having read them again",
                user_id,
                TOKEN_SECONDS,
            )

    auth.on_tokens_revoked.append(tokens_revoked)
    caches.register("tokens", auth.tokens_revoked_elsewhere)

    async def deactivated(user_id: UserID) -> None:
        caches.changed("deactivated", [user_id])
        await caches.sent()

    # An appservice may no longer act as them anywhere (its token is not revoked).
    auth.on_deactivated.append(deactivated)
    caches.register("deactivated", local.appservice_auth.deactivated_elsewhere)
    push_rules.add_listener(lambda user_id: caches.changed("push_rules", [user_id]))
    caches.register("push_rules", push_rules.changed_elsewhere)
    keys.counts_hooks.append(lambda devices: caches.changed("key_counts", devices))
    caches.register("key_counts", keys.counts_changed_elsewhere)

    def receipt_stored(row: ReceiptRow, _position: int) -> None:
        caches.changed("read_positions", [(row.user_id, row.room_id)])

    # Before the receipt wakes anyone: the bus keeps a process's messages in order. Every
    # receipt: sliding sync's kept counts split by thread follow threaded ones too.
    local.receipts.stored_hooks.append(receipt_stored)
    caches.register("read_positions", local.read_positions.moved_elsewhere)
    relay.on_refresh(Stream.DEVICE_LISTS, local.device_lists.written_elsewhere)
    forgotten = rooms.member_store
    forgotten.listeners.append(lambda user_id: caches.changed("forgotten", [user_id]))
    caches.register("forgotten", forgotten.changed_elsewhere)
    ignored = local.account_data.ignored_users
    relay.on_refresh(Stream.ACCOUNT_DATA, lambda _position, users: ignored.written_elsewhere(users))
    if federation.edus is not None:
        # Before the device list change wakes anyone: the bus keeps the order.
        remote = federation.edus.remote_device_lists
        remote.changed_hooks.append(lambda user_id: caches.changed("remote_devices", [user_id]))
        caches.register("remote_devices", remote.changed_elsewhere)
    return caches


def _relay_receipt_rooms(relay: StreamRelay, timeline: Timeline, local: Local) -> None:
    """A receipt in a room of many local members names the room on the bus; a process
    receiving one wakes the members its own snapshot of the room has (everyone when it
    keeps none)."""
    receipts, state = local.receipts, timeline.state

    def stored(row: ReceiptRow, _position: int) -> None:
        relay.in_room(Stream.RECEIPTS, receipts.current_position, row.room_id)

    def members(room_id: str) -> AbstractSet[str] | None:
        room = state.cached_room(RoomID(room_id))
        return None if room is None else room.joined_view()

    receipts.stored_hooks.append(stored)
    relay.room_members(Stream.RECEIPTS, members)


def _follower(
    bus: Bus,
    positions: StreamPositionStore,
    timeline: Timeline,
    writers: list[str],
    own: OwnCommits | None,
) -> EventStreamFollower:
    return EventStreamFollower(
        bus, positions, timeline.event_store, timeline.remote_invites, timeline.state,
        timeline.dispatcher, timeline.starts_at, writers=writers, own=own,
    )  # fmt: skip
