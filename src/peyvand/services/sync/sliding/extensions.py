"""The extensions of simplified sliding sync (MSC4186, "Extensions"), as Synapse 1.163
implements them (``synapse/handlers/sliding_sync/extensions.py``).

- ``to_device`` (MSC3885): ``ext_to_device``.
- ``e2ee`` (MSC3884): ``device_lists`` (``changed`` / ``left``, only after a first
  response), ``device_one_time_keys_count`` and ``device_unused_fallback_key_types``
  (always), from the same sources as /sync's (Client-Server API, "Extensions to /sync").
- ``account_data`` (MSC3959): ``ext_account_data``.
- ``receipts`` (MSC3960): per room of the extension's scope, one ``m.receipt`` event
  (``{"type", "content"}``, the ephemeral event of /sync without its room ID) with the
  receipts changed since the previous response; for a room new to the connection (or
  sent a longer timeline), as Synapse, only the receipts on the events of its timeline
  in this response and the user's own; private receipts only to their owner. A room
  back in view gets the account data and receipts it missed while out of view
  (``sent_rooms``, as Synapse).
- ``typing`` (MSC3961): per room of the scope whose typing set changed since the previous
  response (every room with typing users, for a room new to the connection: Synapse
  sends such a room only a change after the request's token, so who was typing as the
  room came into view is not shown), its ``m.typing`` event.

Receipts and typing are what other members do in a room, so they cover only the rooms
of the scope the user is joined to, as /sync's ``ephemeral`` (Synapse 1.163 takes every
room in view, invites, bans and kicks included: a banned user would see who types and
reads after the ban). A room the user is not joined to is forgotten by the receipts
extension, so on a rejoin it is sent as new (its timeline's receipts), never what
happened while the user was out. Room account data is the user's own and covers every
room of the scope.

An enabled extension is in the response even when it has nothing to say, as Synapse
serialises it; a disabled one is absent. ``has_news`` tells from positions alone whether
an enabled extension may have something to say between two tokens (for a long-poll to
look); ``carries_news`` whether a computed response does (Synapse's ``__bool__`` of each
extension's result: new one-time key counts alone do not end a long-poll).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet

from peyvand.services.sync.sliding.ext_account_data import account_data_extension
from peyvand.services.sync.sliding.ext_request import ExtensionsRequest
from peyvand.services.sync.sliding.ext_to_device import InboxPages, ToDeviceExtension
from peyvand.services.sync.sliding.sent_rooms import RoomStatuses, advance, live_out_of_view, split
from peyvand.services.sync.streams import StreamToken
from peyvand.services.sync.sync import (
    AccountDataSource,
    DeviceKeyCounts,
    DeviceListSource,
    ReceiptSource,
    ToDeviceSource,
    TypingSource,
)
from peyvand.types import DeviceID, JsonDict, RoomID, UserID


class SlidingExtensions:
    def __init__(
        self,
        to_device: ToDeviceSource,
        inbox: InboxPages,
        device_lists: DeviceListSource,
        device_keys: DeviceKeyCounts,
        account_data: AccountDataSource,
        receipts: ReceiptSource,
        typing: TypingSource,
    ) -> None:
        self._to_device = ToDeviceExtension(to_device, inbox)
        self._device_lists = device_lists
        self._device_keys = device_keys
        self._account_data = account_data
        self._receipts = receipts
        self._typing = typing

    async def respond(
        self,
        user_id: UserID,
        device_id: DeviceID,
        wanted: ExtensionsRequest,
        since: StreamToken | None,
        upto: StreamToken,
        lists: Mapping[str, Sequence[RoomID]],
        subscriptions: Sequence[RoomID],
        *,
        initial_rooms: AbstractSet[RoomID] = frozenset(),
        sent: Mapping[str, RoomStatuses] | None = None,
        joined: AbstractSet[RoomID] = frozenset(),
        timelines: Mapping[RoomID, Sequence[str]] | None = None,
        expanded: AbstractSet[RoomID] = frozenset(),
    ) -> tuple[JsonDict, dict[str, RoomStatuses]]:
        """The response's ``extensions`` object for the ``wanted`` extensions (the
        request's, parsed once by ``parse_extensions``), and what the connection holds
        after it of each room of the ``account_data`` and ``receipts`` extensions
        (``sent_rooms``; ``sent`` is what it held before). ``since`` is the connection's
        previous position (None for its first response), ``upto`` the position now;
        ``lists`` the rooms in each list's ranges and ``subscriptions`` the subscribed
        rooms. ``initial_rooms``: the rooms this response sends as new to the connection
        (``initial``), which get their current account data, receipts and typing rather
        than the changes since ``since``. A disabled extension forgets what it sent:
        enabled again, it sends every room's data anew. ``joined``: the rooms the user is
        joined to (the only ones receipts and typing cover); ``timelines``: the event IDs
        of each room's timeline in this response; ``expanded``: the rooms sent a longer
        timeline (``unstable_expanded_timeline``), whose receipts are sent as a new
        room's."""
        held = sent or {}
        after: dict[str, RoomStatuses] = {}
        response: JsonDict = {}
        if wanted.to_device is not None:
            response["to_device"] = await self._to_device.respond(
                user_id, device_id, wanted.to_device, upto.to_device
            )
        if wanted.e2ee:
            response["e2ee"] = await self._e2ee(user_id, device_id, since, upto)
        if wanted.account_data is not None:
            response["account_data"], after["account_data"] = await account_data_extension(
                self._account_data,
                user_id,
                wanted.account_data.select(lists, subscriptions),
                initial_rooms,
                held.get("account_data", {}),
                since.account_data if since is not None else None,
                upto.account_data,
            )
        if wanted.receipts is not None:
            receipts, after["receipts"] = await self._receipts_by_room(
                user_id,
                wanted.receipts.select(lists, subscriptions) & joined,
                initial_rooms | expanded,
                {r: s for r, s in held.get("receipts", {}).items() if r in joined},
                since,
                upto,
                timelines or {},
            )
            response["receipts"] = {"rooms": receipts}
        if wanted.typing is not None:
            rooms = wanted.typing.select(lists, subscriptions) & joined
            since_typing = since.typing if since is not None else 0
            typing = self._typing.typing_for_rooms(sorted(rooms - initial_rooms), since_typing)
            typing.update(self._typing.typing_for_rooms(sorted(rooms & initial_rooms), 0))
            response["typing"] = {"rooms": typing}
        return response, after

    def has_news(
        self, wanted: ExtensionsRequest, since: StreamToken | None, upto: StreamToken
    ) -> bool:
        """Whether an enabled extension of ``wanted`` may have news between ``since`` and
        ``upto``, from positions alone (no reads)."""
        if since is None:
            return wanted.any_enabled()
        return _moved(wanted, since, upto)

    async def _e2ee(
        self, user_id: UserID, device_id: DeviceID, since: StreamToken | None, upto: StreamToken
    ) -> JsonDict:
        e2ee: JsonDict = {
            "device_one_time_keys_count": await self._device_keys.one_time_key_counts(
                user_id, device_id
            ),
            "device_unused_fallback_key_types": (
                await self._device_keys.unused_fallback_key_types(user_id, device_id)
            ),
        }
        if since is not None:
            e2ee["device_lists"] = (
                await self._device_lists.changes(user_id, since, upto)
            ).to_json()
        return e2ee

    async def _receipts_by_room(
        self,
        user_id: UserID,
        rooms: AbstractSet[RoomID],
        initial_rooms: AbstractSet[RoomID],
        statuses: RoomStatuses,
        since: StreamToken | None,
        upto: StreamToken,
        timelines: Mapping[RoomID, Sequence[str]],
    ) -> tuple[dict[RoomID, JsonDict], dict[RoomID, int | None]]:
        """Each room's ``m.receipt`` event: for a room new to the connection the current
        receipts on its ``timelines`` events and the user's own (Synapse's
        ``initial_rooms``), those since the previous response of one sent then, those since
        its own position of one that missed receipts out of view (read from the
        earliest; a receipt repeated is harmless); and the statuses after it. The rooms
        sent last time but out of view are read with those in view, to note which
        missed receipts."""
        parts = split(rooms, statuses, initial_rooms, first=since is None)
        by_room: dict[RoomID, JsonDict] = {}
        missed_out_of_view: set[RoomID] = set()
        if since is not None and upto.receipts > since.receipts:
            watched = live_out_of_view(statuses, rooms)
            if parts.live or watched:
                changed = await self._receipts.receipts_for_rooms(
                    user_id, sorted(parts.live | set(watched)), since.receipts, upto.receipts
                )
                by_room.update((r, changed[r]) for r in parts.live & changed.keys())
                missed_out_of_view = changed.keys() - rooms
        oldest = parts.oldest
        if oldest is not None and oldest < upto.receipts:
            by_room.update(
                await self._receipts.receipts_for_rooms(
                    user_id, sorted(parts.previously), oldest, upto.receipts
                )
            )
        if parts.initial:
            current = await self._receipts.receipts_for_rooms(
                user_id, sorted(parts.initial), 0, upto.receipts
            )
            for room_id, event in current.items():
                kept = _initial_receipts(event, user_id, timelines.get(room_id, ()))
                if kept is not None:
                    by_room[room_id] = kept
        previous = since.receipts if since is not None else None
        return by_room, advance(statuses, rooms, missed_out_of_view, previous)


def _initial_receipts(event: JsonDict, user_id: UserID, timeline: Sequence[str]) -> JsonDict | None:
    """The ``m.receipt`` event cut to the receipts on the ``timeline`` events and those
    of ``user_id`` (None when none is left)."""
    on_timeline = set(timeline)
    content: JsonDict = {}
    for event_id, by_type in event["content"].items():
        for receipt_type, by_user in by_type.items():
            kept = (
                by_user
                if event_id in on_timeline
                else {u: r for u, r in by_user.items() if u == user_id}
            )
            if kept:
                content.setdefault(event_id, {})[receipt_type] = kept
    return {"type": event["type"], "content": content} if content else None


def _moved(wanted: ExtensionsRequest, since: StreamToken, upto: StreamToken) -> bool:
    """Whether a stream an enabled extension reads moved past ``since``. Device lists
    also change with the memberships of the user's rooms (the events stream)."""
    return bool(
        (wanted.to_device is not None and upto.to_device > (wanted.to_device.since or 0))
        or (wanted.e2ee and (upto.device_lists > since.device_lists or upto.events > since.events))
        or (wanted.account_data is not None and upto.account_data > since.account_data)
        or (wanted.receipts is not None and upto.receipts > since.receipts)
        or (wanted.typing is not None and upto.typing > since.typing)
    )


def carries_news(extensions: Mapping[str, object]) -> bool:
    """Whether a response's ``extensions`` (from ``SlidingExtensions.respond``) has
    something that should end a long-poll now."""
    for name, value in extensions.items():
        if not isinstance(value, dict):
            continue
        if name == "to_device" and value["events"]:
            return True
        if name == "e2ee" and any(value.get("device_lists", {}).values()):
            return True
        if name == "account_data" and (value["global"] or value["rooms"]):
            return True
        if name in ("receipts", "typing") and value["rooms"]:
            return True
    return False
