"""Talking to other servers: the transport (discovery, the signed client, the keyring,
the outbound queue) and the federation services. Where federation is off, what the rest
of the server asks of other servers is answered by stand-ins that refuse as the spec
wants (``Remote``)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from peyvand.config import Config
from peyvand.events.signing import SigningKey
from peyvand.federation.client import FederationClient
from peyvand.federation.discovery import ServerResolver
from peyvand.federation.keyring import Keyring
from peyvand.federation.policy import ServerPolicy
from peyvand.federation.sender import FederationSender
from peyvand.federation.transport import FederationTransport
from peyvand.services.accounts.profile import RemoteProfileQuery, no_remote_profiles
from peyvand.services.federation.edus import FederationEdus
from peyvand.services.federation.federation_pdus import load_federation_pdus
from peyvand.services.federation.inbound_membership import InboundMembership
from peyvand.services.federation.inbound_transactions import InboundTransactions, drop_edus
from peyvand.services.federation.invite_inbox import InviteInbox
from peyvand.services.federation.invite_policy import InvitePolicyService
from peyvand.services.federation.outbound_events import OutboundEvents
from peyvand.services.federation.outbound_join import RemoteJoiner
from peyvand.services.federation.outbound_membership import OutboundMembership
from peyvand.services.federation.partial_state import PartialStateRooms
from peyvand.services.federation.partial_state_resync import PartialStateResync
from peyvand.services.federation.queries import RemoteQueries
from peyvand.services.federation.received_events import FederationEventHandler
from peyvand.services.federation.room_access import RoomAccess
from peyvand.services.federation.service import FederationService, allows_server
from peyvand.services.federation.serving import FederationReads
from peyvand.services.federation.signatures import check_pdu_signatures
from peyvand.services.rooms.directory import (
    RemoteAliasLookup,
    RemoteRoomList,
    no_remote_alias,
    no_remote_room_list,
)
from peyvand.services.rooms.membership import RemoteMemberships, Unfederated
from peyvand.services.rooms.policy_lists import PolicyListService
from peyvand.services.rooms.reads import Backfill, no_backfill
from peyvand.services.sync.streams import Stream
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.database import Database
from peyvand.storage.federation_inbox import FederationInboxStore
from peyvand.storage.federation_outbox import FederationOutboxStore
from peyvand.storage.partial_state import PartialStateStore
from peyvand.storage.remote_devices import RemoteDeviceStore
from peyvand.storage.remote_invites import InvitePolicyStore
from peyvand.storage.server_keys import ServerKeyStore
from peyvand.types import RoomID, UserID
from peyvand.wiring.local import Local, Timeline


@dataclass(frozen=True, slots=True)
class Transport:
    policy: ServerPolicy
    resolver: ServerResolver
    client: FederationClient
    requests: FederationTransport
    keyring: Keyring
    outbox: FederationOutboxStore
    sender: FederationSender


def build_transport(
    config: Config, db: Database, signing_key: SigningKey, state: StateService
) -> Transport:
    federation = config.federation
    policy = ServerPolicy(federation.allowed_servers, federation.denied_servers)
    resolver = ServerResolver(test_network=federation.test_network)
    client = FederationClient(
        config.server_name,
        signing_key,
        resolver=resolver,
        policy=policy,
        test_network=federation.test_network,
    )
    requests = FederationTransport(client)
    outbox = FederationOutboxStore(db)
    return Transport(
        policy=policy,
        resolver=resolver,
        client=client,
        requests=requests,
        keyring=Keyring(
            config.server_name,
            signing_key,
            ServerKeyStore(db),
            requests,
            trusted_key_servers=federation.trusted_key_servers,
            key_validity_period_ms=federation.key_validity_period * 1000,
        ),
        outbox=outbox,
        sender=FederationSender(
            config.server_name,
            outbox,
            requests,
            functools.partial(load_federation_pdus, state),
            allows=policy.allows,
        ),
    )


@dataclass(frozen=True, slots=True)
class Remote:
    """What the rest of the server asks of other servers."""

    memberships: RemoteMemberships
    backfill: Backfill
    alias_lookup: RemoteAliasLookup
    room_lists: RemoteRoomList
    profiles: RemoteProfileQuery
    # Returns once a room joined with partial state has all its members (None: no
    # federation, no partial state).
    full_state: Callable[[RoomID], Awaitable[None]] | None


def unfederated() -> Remote:
    """Federation is off: stand-ins that refuse, or find nothing, on other servers."""
    return Remote(
        memberships=Unfederated(),
        backfill=no_backfill,
        alias_lookup=no_remote_alias,
        room_lists=no_remote_room_list,
        profiles=no_remote_profiles,
        full_state=None,
    )


@dataclass(frozen=True, slots=True)
class Federation:
    service: FederationService
    invite_policy: InvitePolicyService
    edus: FederationEdus | None  # None: federation is off
    partial_state: PartialStateResync | None  # None: federation is off
    remote: Remote
    # Which rooms another server may use through this one (room endpoints served here).
    access: RoomAccess
    # Checks and stores the events other servers send.
    received: FederationEventHandler
    # Memberships of local users in rooms on other servers.
    outbound_membership: OutboundMembership


def build_federation(
    config: Config,
    db: Database,
    signing_key: SigningKey,
    timeline: Timeline,
    local: Local,
    transport: Transport,
    policy_lists: PolicyListService,
) -> Federation:
    """The federation service (its endpoints answer 404 while federation is off) and,
    with federation on, the EDUs and what local services ask of other servers."""
    server_name = config.server_name
    state, event_store, events = timeline.state, timeline.event_store, timeline.events
    sender = transport.sender
    check_signatures = functools.partial(check_pdu_signatures, transport.keyring)

    async def user_exists(user_id: UserID) -> bool:
        return await local.accounts.get_user(user_id) is not None

    on_remote_membership = timeline.dispatcher.on_remote_membership
    partial_rooms = PartialStateRooms()
    partial_state = PartialStateResync(
        server_name,
        partial_rooms,
        PartialStateStore(db),
        event_store,
        state,
        transport.requests,
        check_signatures,
        functools.partial(timeline.notifier.advance, Stream.PARTIAL_STATE),
        # On the test network (tests only) the resync's rounds follow each other fast.
        first_backoff_seconds=0.05 if config.federation.test_network else 1.0,
        max_backoff_seconds=0.2 if config.federation.test_network else 60.0,
    )
    handler = FederationEventHandler(
        state,
        event_store,
        check_signatures,
        transport.requests,
        events.allocate_stream,
        events.persist,
        events.allocate_backfill_stream,
        server_name,
        policy_lists.soft_fail_reason,
        partial_state=partial_rooms,
    )
    allows = functools.partial(allows_server, server_name, transport.policy)
    outbound_events = OutboundEvents(
        server_name,
        sender,
        state,
        transport.outbox,
        partial_state_servers=partial_rooms.servers,
    )
    access = RoomAccess(server_name, state, handler, policy_lists, partial_state=partial_rooms)
    reads = FederationReads(server_name, state, access)
    outbound_membership = OutboundMembership(
        server_name,
        transport.requests,
        transport.keyring,
        allows,
        state,
        RemoteJoiner(
            server_name,
            signing_key,
            transport.requests,
            state,
            event_store,
            check_signatures,
            events.allocate_stream,
            events.persist,
            # With several event writers, rooms are joined with their full state: a
            # completion's position and the rooms partial are kept in one process.
            partial=partial_state if len(config.workers.with_role("event_writer")) < 2 else None,
        ),
        timeline.remote_invites,
        signing_key,
        events.allocate_stream,
        events.abandon_stream,
        on_remote_membership,
    )
    invite_policy = InvitePolicyService(
        config.interconnect, InvitePolicyStore(db), timeline.remote_invites, local.account_data
    )
    edus = (
        FederationEdus(
            server_name,
            state,
            timeline.index,
            sender,
            local.typing,
            local.receipts,
            local.to_device,
            local.device_lists,
            local.e2e_keys,
            RemoteDeviceStore(db),
            fetch_user_devices=functools.partial(transport.requests.get_user_devices, timeout=10),
            claim_keys=functools.partial(transport.requests.claim_keys, timeout=10),
            presence=local.presence,
        )
        if config.federation.enabled
        else None
    )
    federation = FederationService(
        server_name,
        transport.policy,
        sender,
        InboundTransactions(
            transport.policy,
            handler,
            FederationInboxStore(db),
            policy_lists,
            drop_edus if edus is None else edus.on_edus,
        ),
        reads,
        InboundMembership(
            server_name,
            state,
            access,
            reads,
            handler,
            outbound_events,
            signing_key,
            policy_lists,
        ),
        outbound_membership,
        InviteInbox(
            server_name,
            transport.keyring,
            state,
            handler,
            timeline.remote_invites,
            signing_key,
            events.allocate_stream,
            events.abandon_stream,
            user_exists,
            on_remote_membership,
            invite_policy,
            policy_lists,
            local.pusher_pool.on_remote_invite,
        ),
        edus,
    )
    if not config.federation.enabled:
        return Federation(
            federation,
            invite_policy,
            None,
            None,
            unfederated(),
            access,
            handler,
            outbound_membership,
        )

    timeline.writer.add_pre_commit(outbound_events.prepare_outbound)
    timeline.dispatcher.listeners.append(outbound_events.on_persisted)
    queries = RemoteQueries(transport.requests, allows)
    remote = Remote(
        memberships=outbound_membership,
        # Backfilled history is stored with positions of its own, counted down by the
        # event writer: a deployment's other processes serve what is stored.
        backfill=handler.backfill if config.workers.has_role("event_writer") else no_backfill,
        alias_lookup=outbound_membership.query_directory,
        room_lists=queries.public_rooms,
        profiles=queries.profile,
        full_state=partial_rooms.wait_for_full_state,
    )
    return Federation(
        federation, invite_policy, edus, partial_state, remote, access, handler, outbound_membership
    )
