"""Simplified sliding sync (MSC4186): its bump stamps (told of every commit), the
connections, the room answers and the extensions, over the sync streams' services; and
the unread counts kept between requests, which /sync shares."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from peyvand.services.federation.partial_state_resync import PartialStateResync
from peyvand.services.rooms.reads import RoomEventsService
from peyvand.services.sync.invite_state import InviteState
from peyvand.services.sync.sliding.account_view import AccountView
from peyvand.services.sync.sliding.bump_stamps import BumpStamps
from peyvand.services.sync.sliding.extensions import SlidingExtensions
from peyvand.services.sync.sliding.membership_senders import MembershipSenders
from peyvand.services.sync.sliding.room_lists import ListFiltering
from peyvand.services.sync.sliding.rooms import RoomResponses
from peyvand.services.sync.sliding.service import SlidingSyncService
from peyvand.services.sync.sliding.unread_counts import UnreadCountCache
from peyvand.services.sync.sliding.user_rooms import UserRooms
from peyvand.storage.database import Database
from peyvand.storage.forgotten_rooms import ForgottenRoomStore
from peyvand.storage.to_device import ToDeviceStore
from peyvand.types import RoomID, ServerName, server_name_of
from peyvand.wiring.local import Local, Timeline


@dataclass(frozen=True, slots=True)
class RoomActivity:
    """Each room's newest positions (told of every commit) and the unread counts kept
    from them, for /sync and sliding sync."""

    bump_stamps: BumpStamps
    unread: UnreadCountCache


def build_room_activity(timeline: Timeline, local: Local, server_name: ServerName) -> RoomActivity:
    def announced() -> int:
        return timeline.notifier.current_token.events

    bump_stamps = BumpStamps(timeline.event_store.get_last_positions_of_types, announced)
    timeline.dispatcher.listeners.append(bump_stamps.on_persisted)
    unread = UnreadCountCache(
        local.push_actions.unread_sections,
        bump_stamps.stamps,
        announced,
        local.account_data.ignored_users.of,
        lambda: timeline.state.forget_epoch,
        is_mine=functools.partial(_is_mine, server_name),
        arrivals=bump_stamps.arrivals,
        counted=local.push_actions.counted,
    )
    local.receipts.stored_hooks.append(unread.receipt_stored)
    local.read_positions.moved_elsewhere_hooks.append(unread.receipts_elsewhere)
    return RoomActivity(bump_stamps, unread)


def build_sliding_sync(
    db: Database,
    timeline: Timeline,
    local: Local,
    activity: RoomActivity,
    room_events: RoomEventsService,
    forgotten: ForgottenRoomStore,
    server_name: ServerName,
    partial_state: PartialStateResync | None,
    *,
    max_timeline_events: int,
) -> SlidingSyncService:
    """``partial_state``: the rooms joined with partial state (None: federation is off,
    there are none); ``max_timeline_events``: the timeline events of one response."""
    notifier = timeline.notifier
    bump_stamps = activity.bump_stamps
    account_view = AccountView(local.sync_account_data, lambda: notifier.current_token.account_data)
    invite_state = InviteState(timeline.state, timeline.remote_invites)
    responses = RoomResponses(
        timeline.state,
        room_events,
        invite_state,
        activity.unread.sections,
        bump_stamps,
        local.account_data.ignored_users.of,
        max_timeline_events=max_timeline_events,
    )
    user_rooms = UserRooms(
        timeline.index,
        bump_stamps,
        forgotten.get_forgotten,
        MembershipSenders(timeline.state, timeline.event_store.get_member_event_ids),
        ignored_by=local.account_data.ignored_users.of,
        invites=invite_state,
    )
    forgotten.listeners.append(user_rooms.forgotten_changed)
    forgotten.elsewhere_listeners.append(user_rooms.forgotten_elsewhere)
    return SlidingSyncService(
        timeline.index,
        user_rooms,
        notifier,
        account_view,
        ListFiltering(
            timeline.state,
            account_view,
            timeline.event_store.get_current_state_of_types,
            invite_state.remote,
        ),
        responses,
        SlidingExtensions(
            local.to_device,
            ToDeviceStore(db),
            local.device_lists,
            local.e2e_keys,
            local.sync_account_data,
            local.receipts,
            local.typing,
        ),
        is_mine=functools.partial(_is_mine, server_name),
        is_partial=partial_state.is_partial if partial_state is not None else _never_partial,
    )


def _is_mine(server_name: ServerName, user_id: str) -> bool:
    return server_name_of(user_id) == server_name


def _never_partial(room_id: RoomID) -> bool:
    return False
