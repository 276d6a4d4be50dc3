"""Rooms: profiles (copied into member events), aliases and the directory, membership
with its guest and policy-list checks, creation, state, upgrades, reads and search.

Built in dependency order, so no service is ever half-wired: the policy lists' rules and
the guest check exist before membership, and what joins (the policy-list follower) or
leaves (guest removal) through membership comes after it."""

from __future__ import annotations

from dataclasses import dataclass

from peyvand.config import Config
from peyvand.services.accounts.profile import ProfileService
from peyvand.services.push.notifications import NotificationsService
from peyvand.services.rooms.aggregations import BundledAggregations
from peyvand.services.rooms.creation import RoomsService
from peyvand.services.rooms.directory import DirectoryService
from peyvand.services.rooms.guest_access import GuestAccess, GuestRemoval
from peyvand.services.rooms.membership import MembershipService
from peyvand.services.rooms.policy_list_follower import PolicyListFollower, PolicyRulesReader
from peyvand.services.rooms.policy_lists import PolicyListService
from peyvand.services.rooms.reads import RoomEventsService
from peyvand.services.rooms.relations import RelationsService
from peyvand.services.rooms.replaced_state import ReplacedState
from peyvand.services.rooms.search import SearchService
from peyvand.services.rooms.search_backfill import SearchBackfill
from peyvand.services.rooms.server_notices import system_user_of
from peyvand.services.rooms.state_events import StateEventService
from peyvand.services.rooms.threads import ThreadsService
from peyvand.services.rooms.upgrade import RoomUpgradeService
from peyvand.storage.database import Database
from peyvand.storage.directory import DirectoryStore
from peyvand.storage.forgotten_rooms import ForgottenRoomStore
from peyvand.storage.guests import GuestStore
from peyvand.storage.profile_fields import ProfileFieldStore
from peyvand.storage.relations import RelationStore
from peyvand.storage.search import SearchStore
from peyvand.storage.threads import ThreadStore
from peyvand.wiring.federation import Remote
from peyvand.wiring.local import Local, Timeline


@dataclass(frozen=True, slots=True)
class Rooms:
    directory_store: DirectoryStore
    guest_store: GuestStore
    member_store: ForgottenRoomStore
    profile: ProfileService
    directory: DirectoryService
    membership: MembershipService
    guest_removal: GuestRemoval
    policy_list_follower: PolicyListFollower
    # The followed rooms' rules read in every process of a deployment.
    policy_rules: PolicyRulesReader
    rooms: RoomsService
    state_events: StateEventService
    room_upgrade: RoomUpgradeService
    room_events: RoomEventsService
    threads: ThreadsService
    relations: RelationsService
    search: SearchService
    search_backfill: SearchBackfill
    notifications: NotificationsService


def build_rooms(
    config: Config,
    db: Database,
    timeline: Timeline,
    local: Local,
    policy_lists: PolicyListService,
    remote: Remote,
) -> Rooms:
    server_name = config.server_name
    state, event_store, events = timeline.state, timeline.event_store, timeline.events
    profile = ProfileService(
        server_name,
        local.accounts,
        ProfileFieldStore(db),
        event_store,
        state,
        events,
        remote.profiles,
        local.appservice_queries.user_exists,
    )
    directory_store = DirectoryStore(db)
    directory = DirectoryService(
        server_name,
        directory_store,
        event_store,
        state,
        events,
        remote.alias_lookup,
        remote.room_lists,
        local.appservices,
        local.appservice_queries.alias_exists,
    )
    guest_store = GuestStore(db)
    guest_access = GuestAccess(guest_store, state)
    member_store = ForgottenRoomStore(db)
    membership = MembershipService(
        server_name,
        events,
        state,
        member_store,
        profile.profile_of,
        remote.memberships,
        policy_lists,
        guest_access,
        wait_for_full_state=remote.full_state,
        server_notices_user=system_user_of(config.server_notices, server_name),
    )
    guest_removal = GuestRemoval(server_name, guest_store, state, guest_access, membership.leave)
    timeline.dispatcher.listeners.append(guest_removal.on_persisted)
    follower = PolicyListFollower(
        policy_lists, local.accounts, membership.join, directory.get_alias
    )
    timeline.dispatcher.listeners.append(follower.on_persisted)
    # A deployment's every process enforces the rules; the follower runs on one.
    rules = PolicyRulesReader(policy_lists, directory.get_alias)
    if config.workers.enabled:
        timeline.dispatcher.listeners.append(rules.on_persisted)
    replaced = ReplacedState(event_store, state)
    timeline.dispatcher.listeners.append(replaced.on_persisted)
    relation_store = RelationStore(db)
    aggregations = BundledAggregations(
        relation_store,
        state,
        local.visibility,
        local.account_data.ignored_users.of,
        server_name,
    )
    timeline.dispatcher.listeners.append(aggregations.on_persisted)
    room_events = RoomEventsService(
        event_store,
        state,
        local.visibility,
        lambda: timeline.notifier.current_token.events,
        remote.backfill,
        recent=timeline.recent,
        replaced=replaced,
        aggregations=aggregations,
        wait_for_full_state=remote.full_state,
    )
    threads = ThreadsService(ThreadStore(db), state, local.visibility, room_events)
    search_store = SearchStore(db)
    timeline.writer.add_pre_commit(threads.prepare)
    return Rooms(
        directory_store=directory_store,
        guest_store=guest_store,
        member_store=member_store,
        profile=profile,
        directory=directory,
        membership=membership,
        guest_removal=guest_removal,
        policy_list_follower=follower,
        policy_rules=rules,
        rooms=RoomsService(
            server_name,
            events,
            event_store,
            profile.profile_of,
            directory.resolve_alias,
            directory.create_alias_for_new_room,
            directory.check_alias_for_new_room,
            policy_lists,
            membership.invite,
            federates=config.federation.enabled,
        ),
        state_events=StateEventService(events, state, membership, directory.get_alias),
        room_upgrade=RoomUpgradeService(
            server_name,
            events,
            state,
            event_store,
            directory.move_aliases,
            local.push_rules,
            local.account_data,
            profile.profile_of,
        ),
        room_events=room_events,
        threads=threads,
        relations=RelationsService(relation_store, state, local.visibility, room_events),
        search=SearchService(
            search_store,
            state,
            local.visibility,
            room_events,
            timeline.index.memberships,
            member_store.get_forgotten,
        ),
        search_backfill=SearchBackfill(search_store),
        notifications=NotificationsService(
            local.notifications, state, room_events, local.account_data.ignored_users.of
        ),
    )
