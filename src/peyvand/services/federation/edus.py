"""EDUs over federation, both ways (Server-Server API: "Typing Notifications", "Receipts",
"Presence", "Device Management", "End-to-End Encryption", "Send-to-device messaging").

Inbound, ``on_edus`` (called with each transaction's EDUs after its PDUs) checks every
EDU's shape (the limits of ``events.json_input``: depth, no U+0000, integers that encode)
and that it speaks only for its origin: the users it names belong to the
origin, and a room EDU's user is joined to the room (so the origin has a member there)
and the room's server ACL allows the origin. It then hands the EDU to the service that
owns the area. Anything else is logged at INFO and ignored; nothing is ever raised.

- ``m.typing``: ``TypingService.set_remote_typing`` (expires after 30 s like local typing).
- ``m.receipt``: ``ReceiptService.apply_remote_receipt`` (``m.read`` only).
- ``m.direct_to_device``: ``services/e2ee/to_device_edus.py``.
- ``m.device_list_update`` and ``m.signing_key_update``: the cache of remote users'
  devices and cross-signing keys, ``services/e2ee/remote_device_lists.py``.
- ``m.presence``: each pushed state of a user of the origin who shares a room with a
  local user goes to ``PresenceService.set_remote`` (malformed or foreign ones are
  dropped one by one); ignored when presence is off.

Outbound, listeners on those services send: local typing (``m.typing``) and ``m.read``
receipts (``m.receipt``) to the other servers in the room, ephemeral (to-device messages,
device lists and cross-signing keys: ``services/e2ee/to_device_edus.py`` and
``outbound_device_lists.py``).
Local presence changes (``m.presence``), ephemeral: each change the presence service
settles at once (a sweep may settle many) is one EDU per server sharing a room with any
of the changed users, pushing the states of those users only. Joins, told by the
presence sweep (within 5 s): a server whose user joined a room gets the presence of the
room's local members, and a local user who joined is pushed to the room's servers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from peyvand.events.json_input import UnacceptableJson, check_json_value
from peyvand.events.server_acl import server_allowed
from peyvand.services.e2ee.device_lists import DeviceListService
from peyvand.services.e2ee.keys import E2eKeysService
from peyvand.services.e2ee.outbound_device_lists import OutboundDeviceLists
from peyvand.services.e2ee.remote_device_lists import (
    KeysClaimer,
    RemoteDeviceLists,
    UserDevicesFetcher,
)
from peyvand.services.e2ee.to_device import ToDeviceService
from peyvand.services.e2ee.to_device_edus import ToDeviceEdus
from peyvand.services.federation.edu_support import (
    EduSender,
    IgnoredEdu,
    edu_position,
    edu_string,
    edu_user_of,
)
from peyvand.services.federation.forwarded_edus import CATCH_UP_SECONDS, PrimaryEdus
from peyvand.services.federation.room_sharing import RoomSharing
from peyvand.services.sync.presence import STATES, PresenceService, UserPresence
from peyvand.services.sync.receipts import READ, ReceiptService
from peyvand.services.sync.typing import TypingService
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.storage.receipts import ReceiptRow
from peyvand.storage.remote_devices import RemoteDeviceStore
from peyvand.types import EventID, JsonDict, RoomID, ServerName, UserID, server_name_of

logger = logging.getLogger(__name__)


def _push_state(entry: UserPresence, now_ms: int) -> JsonDict:
    """One state of an ``m.presence`` push (``last_active_ago`` is required there)."""
    return {"user_id": entry.user_id, "last_active_ago": 0, **entry.content(now_ms)}


class FederationEdus:
    def __init__(
        self,
        server_name: ServerName,
        state: StateService,
        index: RoomIndex,
        sender: EduSender,
        typing: TypingService,
        receipts: ReceiptService,
        to_device: ToDeviceService,
        device_lists: DeviceListService,
        e2e_keys: E2eKeysService,
        store: RemoteDeviceStore,
        *,
        fetch_user_devices: UserDevicesFetcher | None = None,
        claim_keys: KeysClaimer | None = None,
        presence: PresenceService | None = None,
    ) -> None:
        """Registers its listeners on the services: from here on their local changes
        go to other servers and their queries of remote users' keys come here."""
        self._state = state
        self._sender = sender
        self._typing = typing
        self._receipts = receipts
        self._presence = presence
        self._sharing = RoomSharing(server_name, state, index)
        self.to_device = ToDeviceEdus(server_name, to_device, sender)
        self.outbound_device_lists = OutboundDeviceLists(
            self._sharing, sender, device_lists, e2e_keys, store
        )
        self.remote_device_lists = RemoteDeviceLists(
            self._sharing,
            device_lists,
            e2e_keys,
            store,
            fetch_user_devices=fetch_user_devices,
            claim_keys=claim_keys,
        )
        self._handlers: dict[str, Callable[[ServerName, JsonDict], Awaitable[None]]] = {
            "m.typing": self._on_typing,
            "m.receipt": self._on_receipt,
            "m.direct_to_device": self.to_device.on_direct_to_device,
            "m.device_list_update": self.remote_device_lists.on_device_list_update,
            "m.signing_key_update": self.remote_device_lists.on_signing_key_update,
            "m.presence": self._on_presence,
        }
        self._primary: PrimaryEdus | None = None
        self._catch_up: Callable[[], Awaitable[None]] | None = None
        typing.listeners.append(self._on_local_typing)
        receipts.listeners.append(self._on_local_receipt)
        if presence is not None:
            presence.listeners.append(self._on_local_presence)
            presence.join_listeners.append(self._on_joins_for_presence)

    async def start(self) -> None:
        await self.remote_device_lists.start()

    async def stop(self) -> None:
        await self.remote_device_lists.stop()

    # -- inbound -------------------------------------------------------------------------

    def forward_to_primary(
        self, primary: PrimaryEdus, catch_up: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """A deployment: receipts and to-device messages are taken in by the primary
        writer (``services.federation.forwarded_edus``); there ``catch_up`` first
        announces every event stored so far (a receipt of a user whose join, in the same
        transaction, another writer stored)."""
        self._primary = primary
        self._catch_up = catch_up

    async def receive_forwarded(self, origin: ServerName, edus: Sequence[Any]) -> None:
        """EDUs another process took in for the primary (this one: its route is behind
        ``api.primary_gate``)."""
        if self._catch_up is not None:
            try:
                async with asyncio.timeout(CATCH_UP_SECONDS):
                    await self._catch_up()
            except TimeoutError:
                logger.warning("EDUs from %s applied before this writer caught up", origin)
        await self.on_edus(origin, edus)

    async def on_edus(self, origin: ServerName, edus: Sequence[Any]) -> None:
        """The EDUs of a transaction from ``origin``, each applied or ignored on its own."""
        if self._primary is not None and not self._primary.here():
            edus, primary = self._primary.split(edus)
            if primary:
                await self._primary.forward(origin, primary)
        for edu in edus:
            edu_type = edu.get("edu_type") if isinstance(edu, dict) else None
            try:
                if not isinstance(edu, dict) or not isinstance(edu_type, str):
                    raise IgnoredEdu("not an object with an edu_type")
                content = edu.get("content")
                if not isinstance(content, dict):
                    raise IgnoredEdu("content is not an object")
                try:
                    check_json_value(content)
                except UnacceptableJson as exc:
                    raise IgnoredEdu(str(exc)) from None
                handler = self._handlers.get(edu_type)
                if handler is None:
                    logger.debug("EDU %s from %s ignored: not supported", edu_type, origin)
                    continue
                await handler(origin, content)
            except IgnoredEdu as reason:
                logger.info("EDU %s from %s ignored: %s", edu_type, origin, reason)
            except Exception:
                logger.exception("EDU %s from %s failed", edu_type, origin)

    async def _room(self, origin: ServerName, room_id: object) -> RoomSnapshot:
        """A room this server is in whose server ACL allows ``origin``."""
        snapshot = await self._state.get_room(RoomID(edu_string(room_id, "room_id")))
        if snapshot is None:
            raise IgnoredEdu(f"unknown room {room_id}")
        acl_id = snapshot.state.get(("m.room.server_acl", ""))
        acl = (await self._state.get_pdus([acl_id])).get(acl_id) if acl_id is not None else None
        if acl is not None and not server_allowed(acl.content, origin):
            raise IgnoredEdu(f"{origin} is denied by the server ACL of {room_id}")
        return snapshot

    @staticmethod
    def _joined(snapshot: RoomSnapshot, user_id: UserID) -> None:
        if snapshot.memberships.get(user_id) != "join":
            raise IgnoredEdu(f"{user_id} is not joined to {snapshot.room_id}")

    async def _on_typing(self, origin: ServerName, content: JsonDict) -> None:
        """Server-Server API, "Typing Notifications"."""
        user_id = edu_user_of(origin, content.get("user_id"), "user_id")
        typing = content.get("typing")
        if not isinstance(typing, bool):
            raise IgnoredEdu("typing must be a boolean")
        snapshot = await self._room(origin, content.get("room_id"))
        self._joined(snapshot, user_id)
        await self._typing.set_remote_typing(user_id, snapshot.room_id, typing)

    async def _on_receipt(self, origin: ServerName, content: JsonDict) -> None:
        """Server-Server API, "Receipts": each room's, and each user's, on its own."""
        for room_id, by_type in content.items():
            try:
                snapshot = await self._room(origin, room_id)
                if not isinstance(by_type, dict):
                    raise IgnoredEdu(f"receipts of {room_id} must be an object")
                for receipt_type, by_user in by_type.items():
                    if receipt_type != READ or not isinstance(by_user, dict):
                        logger.info("%r receipts from %s ignored", receipt_type, origin)
                        continue
                    for user, receipt in by_user.items():
                        try:
                            await self._apply_receipt(origin, snapshot, user, receipt)
                        except IgnoredEdu as reason:
                            logger.info("receipt from %s ignored: %s", origin, reason)
            except IgnoredEdu as reason:
                logger.info("receipts from %s ignored: %s", origin, reason)

    async def _apply_receipt(
        self, origin: ServerName, snapshot: RoomSnapshot, user: object, receipt: object
    ) -> None:
        user_id = edu_user_of(origin, user, "receipt user")
        self._joined(snapshot, user_id)
        if not isinstance(receipt, dict) or not isinstance(receipt.get("data"), dict):
            raise IgnoredEdu(f"the receipt of {user_id} must be an object with data")
        event_ids = receipt.get("event_ids")
        if not isinstance(event_ids, list) or not event_ids:
            raise IgnoredEdu(f"the receipt of {user_id} must name events")
        checked = [EventID(edu_string(e, "event ID")) for e in event_ids]
        ts = edu_position(receipt["data"].get("ts"), "ts")
        thread_id = receipt["data"].get("thread_id")
        if thread_id is not None:
            thread_id = edu_string(thread_id, "thread_id")
        for event_id in checked:
            if not await self._receipts.apply_remote_receipt(
                user_id, snapshot.room_id, event_id, ts, thread_id
            ):
                logger.info("receipt of %s for %s not stored: unknown or older", user_id, event_id)

    async def _on_presence(self, origin: ServerName, content: JsonDict) -> None:
        """Server-Server API, "Presence": each pushed state on its own."""
        if self._presence is None or not self._presence.enabled:
            return
        push = content.get("push")
        if not isinstance(push, list):
            raise IgnoredEdu("push must be a list")
        updates: list[JsonDict] = []
        for item in push:
            try:
                if not isinstance(item, dict):
                    raise IgnoredEdu("a presence update must be an object")
                user_id = edu_user_of(origin, item.get("user_id"), "user_id")
                presence = item.get("presence")
                if presence not in STATES:
                    raise IgnoredEdu(f"presence of {user_id} is not one of {STATES}")
                status_msg = item.get("status_msg")
                if status_msg is not None and not isinstance(status_msg, str):
                    raise IgnoredEdu("status_msg must be a string")
                active = item.get("currently_active", False)
                if not isinstance(active, bool):
                    raise IgnoredEdu("currently_active must be a boolean")
                ago = edu_position(item.get("last_active_ago", 0), "last_active_ago")
                if not await self._sharing.shares_room_with_local_user(user_id):
                    raise IgnoredEdu(f"no local user shares a room with {user_id}")
                updates.append(
                    {
                        "user_id": user_id,
                        "presence": presence,
                        "status_msg": status_msg,
                        "currently_active": active,
                        "last_active_ago": ago,
                    }
                )
            except IgnoredEdu as reason:
                logger.info("presence update from %s ignored: %s", origin, reason)
        if updates:
            await self._presence.set_remote(updates)

    # -- outbound ----------------------------------------------------------------------

    async def _send_ephemeral(self, room_id: RoomID, edu_type: str, content: JsonDict) -> None:
        snapshot = await self._state.get_room(room_id)
        if snapshot is not None:
            self._sender.send_ephemeral(
                sorted(self._sharing.servers_in(snapshot)), edu_type, content
            )

    async def _on_local_typing(self, room_id: RoomID, user_id: UserID, typing: bool) -> None:
        if not self._sharing.is_local(user_id):
            return
        content = {"room_id": room_id, "user_id": user_id, "typing": typing}
        try:
            await self._send_ephemeral(room_id, "m.typing", content)
        except Exception:
            logger.exception("sending typing of %s in %s failed", user_id, room_id)

    async def _on_local_receipt(self, row: ReceiptRow) -> None:
        data: JsonDict = {"ts": row.ts}
        if row.thread_id:
            data["thread_id"] = row.thread_id
        receipt: JsonDict = {"event_ids": [row.event_id], "data": data}
        content: JsonDict = {row.room_id: {READ: {row.user_id: receipt}}}
        try:
            await self._send_ephemeral(row.room_id, "m.receipt", content)
        except Exception:
            logger.exception("sending the receipt of %s in %s failed", row.user_id, row.room_id)

    async def _on_local_presence(self, changed: Sequence[UserPresence]) -> None:
        """``PresenceService.listeners``: one m.presence per server sharing a room with
        any of the changed local users, with the states of those it shares one with."""
        now = self._presence.now_ms() if self._presence is not None else 0
        by_server: dict[ServerName, list[JsonDict]] = {}
        for entry in changed:
            if not self._sharing.is_local(entry.user_id):
                continue
            state = _push_state(entry, now)
            for server in await self._sharing.servers_sharing_rooms(entry.user_id):
                by_server.setdefault(server, []).append(state)
        for server, push in sorted(by_server.items()):
            try:
                await self._sender.send_edu(server, "m.presence", {"push": push}, durable=False)
            except Exception:
                logger.exception("sending presence to %s failed", server)

    async def _on_joins_for_presence(self, joins: Sequence[tuple[RoomID, UserID]]) -> None:
        """``PresenceService.join_listeners``: a local user who joined a room is pushed
        to the other servers in it; a server whose user joined gets the presence of the
        room's local members (as Synapse does on a join), those not offline only."""
        if self._presence is None:
            return
        now = self._presence.now_ms()
        by_server: dict[ServerName, dict[UserID, JsonDict]] = {}
        for room_id, user_id in joins:
            snapshot = await self._state.get_room(room_id)
            if snapshot is None or snapshot.memberships.get(user_id) != "join":
                continue
            if self._sharing.is_local(user_id):
                servers, users = self._sharing.servers_in(snapshot), [user_id]
            else:
                servers = {server_name_of(user_id)}
                users = [u for u in snapshot.joined_members() if self._sharing.is_local(u)]
            for entry in self._presence.states_of(users):
                state = _push_state(entry, now)
                for server in servers:
                    by_server.setdefault(server, {})[entry.user_id] = state
        for server, states in sorted(by_server.items()):
            push = [states[u] for u in sorted(states)]
            try:
                await self._sender.send_edu(server, "m.presence", {"push": push}, durable=False)
            except Exception:
                logger.exception("sending presence to %s failed", server)
