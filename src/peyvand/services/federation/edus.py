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
- ``m.direct_to_device``: ``ToDeviceService.deliver_remote``, once per (origin, message_id).
- ``m.device_list_update``: the cache of the remote user's devices follows the sender's
  per-user ``stream_id`` / ``prev_id`` chain. An update whose ``prev_id``s are all known is
  applied; a gap (or a user never fetched) marks the cache stale, to be fetched again
  with ``GET /user/devices`` (``resync_user``). Either way ``DeviceListService`` records
  the change, so local users sharing a room see the user in ``device_lists.changed``.
  Only users who share a room with a local user are tracked.
- ``m.signing_key_update``: the cached master and self-signing keys, likewise.
- ``m.presence``: each pushed state of a user of the origin who shares a room with a
  local user goes to ``PresenceService.set_remote`` (malformed or foreign ones are
  dropped one by one); ignored when presence is off.

Outbound, listeners on those services send: local typing (``m.typing``) and ``m.read``
receipts (``m.receipt``) to the other servers in the room, ephemeral; to-device messages
for remote users, one ``m.direct_to_device`` per destination with a random message_id;
a local user's new and deleted devices and new device keys (``m.device_list_update``,
numbered per user in ``local_device_list_streams``) and new master or self-signing keys
(``m.signing_key_update``) to every server sharing a room with the user, durable.
Local presence changes (``m.presence``), ephemeral: each change the presence service
settles at once (a sweep may settle many) is one EDU per server sharing a room with any
of the changed users, pushing the states of those users only. Joins, told by the
presence sweep (within 5 s): a server whose user joined a room gets the presence of the
room's local members, and a local user who joined is pushed to the room's servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Final, Protocol

import orjson

from peyvand.errors import MatrixError, invalid_param
from peyvand.events.json_input import UnacceptableJson, check_json_value
from peyvand.events.server_acl import server_allowed
from peyvand.services.e2ee.device_lists import DeviceListService
from peyvand.services.e2ee.keys import (
    MASTER,
    MAX_DEVICE_KEYS_BYTES,
    SELF_SIGNING,
    E2eKeysService,
    canonical,
    check_cross_signing_key,
)
from peyvand.services.e2ee.to_device import MAX_MESSAGE_BYTES, ToDeviceService
from peyvand.services.lru import LRU
from peyvand.services.sync.presence import STATES, PresenceService, UserPresence
from peyvand.services.sync.receipts import READ, ReceiptService
from peyvand.services.sync.streams import MAX_POSITION
from peyvand.services.sync.typing import TypingService
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.storage.receipts import ReceiptRow
from peyvand.storage.remote_devices import RemoteDevice, RemoteDeviceList, RemoteDeviceStore
from peyvand.types import (
    DeviceID,
    EventID,
    JsonDict,
    RoomID,
    UserID,
    is_valid_user_id,
    server_name_of,
)

logger = logging.getLogger(__name__)

# A timeout on every request this module makes of another server.
REMOTE_TIMEOUT_S: Final = 10.0
# How often stale device lists are fetched again when nothing asks sooner.
RESYNC_INTERVAL_S: Final = 300.0
_RESYNC_BATCH: Final = 100
_RESYNC_CONCURRENCY: Final = 8
_MAX_ID_LENGTH: Final = 255
# Recently applied stream_ids kept per remote user (a prev_id may name any of them).
_SEEN_PER_USER: Final = 32
_CACHE_SIZE: Final = 10_000
_CROSS_SIGNING_FIELDS: Final = {MASTER: "master_key", SELF_SIGNING: "self_signing_key"}
_UNREACHABLE: Final = {"status": 503, "message": "Failed to reach the user's server"}


class EduSender(Protocol):
    """What is used of ``FederationSender``."""

    async def send_edu(
        self, destination: str, edu_type: str, content: JsonDict, *, durable: bool
    ) -> None: ...

    async def send_durable_edus(self, edus: Sequence[tuple[str, str, JsonDict]]) -> None: ...


# GET /_matrix/federation/v1/user/devices/{userId} at (server, user): the JSON answer.
UserDevicesFetcher = Callable[[str, UserID], Awaitable[Any]]
# POST /_matrix/federation/v1/user/keys/claim at (server, body): the JSON answer.
KeysClaimer = Callable[[str, JsonDict], Awaitable[Any]]


class _Ignored(Exception):
    """An EDU (or part of one) that is malformed or not the origin's to send."""


# Validation (pure) ---------------------------------------------------------------------


def _string(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_ID_LENGTH:
        raise _Ignored(f"{what} must be a non-empty string of at most {_MAX_ID_LENGTH}")
    return value


def _position(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_POSITION:
        raise _Ignored(f"{what} must be a non-negative integer")
    return value


def _user_of(origin: str, value: object, what: str) -> UserID:
    """A user ID of ``origin``'s."""
    if not isinstance(value, str) or not is_valid_user_id(value):
        raise _Ignored(f"{what} is not a user ID")
    if server_name_of(value) != origin:
        raise _Ignored(f"{what} {value} is not a user of {origin}")
    return UserID(value)


def _device_keys(value: object, user_id: UserID, device_id: str) -> str | None:
    """The DeviceKeys of a remote device as canonical JSON (None if absent); they must
    name the user and device they are sent for."""
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or value.get("user_id") != user_id
        or value.get("device_id") != device_id
        or not isinstance(value.get("keys"), dict)
    ):
        raise _Ignored(f"keys of {user_id} {device_id} are not that device's DeviceKeys")
    keys = canonical(value)
    if len(keys) > MAX_DEVICE_KEYS_BYTES:
        raise _Ignored(f"keys of {user_id} {device_id} are too large")
    return keys


def _cross_signing_keys(content: Mapping[str, Any], user_id: UserID) -> dict[str, str]:
    """The master and self-signing keys in ``content`` (key type -> canonical JSON)."""
    keys: dict[str, str] = {}
    for key_type, field_name in _CROSS_SIGNING_FIELDS.items():
        value = content.get(field_name)
        if value is None:
            continue
        try:
            keys[key_type] = canonical(check_cross_signing_key(value, user_id, key_type).json)
        except MatrixError as exc:
            raise _Ignored(f"{field_name}: {exc.message}") from None
    return keys


def parse_user_devices(user_id: UserID, body: object) -> RemoteDeviceList | None:
    """An answer of ``GET /user/devices/{userId}`` as a fresh cache entry; None if it is
    not a well-formed answer about ``user_id``. Malformed devices are left out."""
    if not isinstance(body, dict) or body.get("user_id") != user_id:
        return None
    devices = body.get("devices")
    try:
        stream_id = _position(body.get("stream_id"), "stream_id")
        cross_signing = _cross_signing_keys(body, user_id)
    except _Ignored:
        return None
    if not isinstance(devices, list):
        return None
    found: dict[str, RemoteDevice] = {}
    for device in devices:
        try:
            if not isinstance(device, dict):
                raise _Ignored("a device must be an object")
            device_id = _string(device.get("device_id"), "device_id")
            name = device.get("device_display_name")
            if not isinstance(name, str) or len(name) > _MAX_ID_LENGTH:
                name = None
            keys = _device_keys(device.get("keys"), user_id, device_id)
            found[device_id] = RemoteDevice(device_id, name, keys)
        except _Ignored as reason:
            logger.info("device of %s left out of its device list: %s", user_id, reason)
    return RemoteDeviceList(
        user_id,
        stream_id,
        False,
        tuple(found[d] for d in sorted(found)),
        tuple(sorted(cross_signing.items())),
    )


def _push_state(entry: UserPresence, now_ms: int) -> JsonDict:
    """One state of an ``m.presence`` push (``last_active_ago`` is required there)."""
    return {"user_id": entry.user_id, "last_active_ago": 0, **entry.content(now_ms)}


# The service ---------------------------------------------------------------------------


class FederationEdus:
    def __init__(
        self,
        server_name: str,
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
        self._server_name = server_name
        self._state = state
        self._index = index
        self._sender = sender
        self._typing = typing
        self._receipts = receipts
        self._to_device = to_device
        self._device_lists = device_lists
        self._e2e_keys = e2e_keys
        self._store = store
        self._fetch_user_devices = fetch_user_devices
        self._claim_keys = claim_keys
        self._presence = presence
        self._handlers: dict[str, Callable[[str, JsonDict], Awaitable[None]]] = {
            "m.typing": self._on_typing,
            "m.receipt": self._on_receipt,
            "m.direct_to_device": self._on_direct_to_device,
            "m.device_list_update": self._on_device_list_update,
            "m.signing_key_update": self._on_signing_key_update,
            "m.presence": self._on_presence,
        }
        # Remote device lists (None: not cached), invalidated next to every write.
        self._lists: LRU[UserID, tuple[RemoteDeviceList | None]] = LRU(_CACHE_SIZE)
        self._lists_version = 0
        self._seen: LRU[UserID, tuple[int, ...]] = LRU(_CACHE_SIZE)
        # Serialises writes to the remote caches, and local sequences with their EDUs.
        self._remote_lock = asyncio.Lock()
        self._outbound_lock = asyncio.Lock()
        self._resync_wanted = asyncio.Event()
        self._resync_task: asyncio.Task[None] | None = None

        typing.listeners.append(self._on_local_typing)
        receipts.listeners.append(self._on_local_receipt)
        to_device.remote_sender = self._send_to_device
        device_lists.device_listeners.append(self._on_local_devices)
        e2e_keys.device_keys_listeners.append(self._on_local_devices)
        e2e_keys.cross_signing_listeners.append(self._on_local_cross_signing)
        e2e_keys.remote_keys = self
        if presence is not None:
            presence.listeners.append(self._on_local_presence)
            presence.join_listeners.append(self._on_joins_for_presence)

    async def start(self) -> None:
        """Start fetching stale device lists in the background (with a fetcher)."""
        if self._fetch_user_devices is not None:
            fetch = self._fetch_user_devices
            self._resync_wanted.set()
            self._resync_task = asyncio.create_task(
                self._resync_forever(fetch), name="device-list-resync"
            )

    async def stop(self) -> None:
        if self._resync_task is not None:
            self._resync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resync_task
            self._resync_task = None

    def _is_local(self, user_id: str) -> bool:
        return server_name_of(user_id) == self._server_name

    # -- inbound -------------------------------------------------------------------------

    async def on_edus(self, origin: str, edus: Sequence[Any]) -> None:
        """The EDUs of a transaction from ``origin``, each applied or ignored on its own."""
        for edu in edus:
            edu_type = edu.get("edu_type") if isinstance(edu, dict) else None
            try:
                if not isinstance(edu, dict) or not isinstance(edu_type, str):
                    raise _Ignored("not an object with an edu_type")
                content = edu.get("content")
                if not isinstance(content, dict):
                    raise _Ignored("content is not an object")
                try:
                    check_json_value(content)
                except UnacceptableJson as exc:
                    raise _Ignored(str(exc)) from None
                handler = self._handlers.get(edu_type)
                if handler is None:
                    logger.debug("EDU %s from %s ignored: not supported", edu_type, origin)
                    continue
                await handler(origin, content)
            except _Ignored as reason:
                logger.info("EDU %s from %s ignored: %s", edu_type, origin, reason)
            except Exception:
                logger.exception("EDU %s from %s failed", edu_type, origin)

    async def _room(self, origin: str, room_id: object) -> RoomSnapshot:
        """A room this server is in whose server ACL allows ``origin``."""
        snapshot = await self._state.get_room(RoomID(_string(room_id, "room_id")))
        if snapshot is None:
            raise _Ignored(f"unknown room {room_id}")
        acl_id = snapshot.state.get(("m.room.server_acl", ""))
        acl = (await self._state.get_pdus([acl_id])).get(acl_id) if acl_id is not None else None
        if acl is not None and not server_allowed(acl.content, origin):
            raise _Ignored(f"{origin} is denied by the server ACL of {room_id}")
        return snapshot

    @staticmethod
    def _joined(snapshot: RoomSnapshot, user_id: UserID) -> None:
        if snapshot.memberships.get(user_id) != "join":
            raise _Ignored(f"{user_id} is not joined to {snapshot.room_id}")

    async def _on_typing(self, origin: str, content: JsonDict) -> None:
        """Server-Server API, "Typing Notifications"."""
        user_id = _user_of(origin, content.get("user_id"), "user_id")
        typing = content.get("typing")
        if not isinstance(typing, bool):
            raise _Ignored("typing must be a boolean")
        snapshot = await self._room(origin, content.get("room_id"))
        self._joined(snapshot, user_id)
        await self._typing.set_remote_typing(user_id, snapshot.room_id, typing)

    async def _on_receipt(self, origin: str, content: JsonDict) -> None:
        """Server-Server API, "Receipts": each room's, and each user's, on its own."""
        for room_id, by_type in content.items():
            try:
                snapshot = await self._room(origin, room_id)
                if not isinstance(by_type, dict):
                    raise _Ignored(f"receipts of {room_id} must be an object")
                for receipt_type, by_user in by_type.items():
                    if receipt_type != READ or not isinstance(by_user, dict):
                        logger.info("%r receipts from %s ignored", receipt_type, origin)
                        continue
                    for user, receipt in by_user.items():
                        try:
                            await self._apply_receipt(origin, snapshot, user, receipt)
                        except _Ignored as reason:
                            logger.info("receipt from %s ignored: %s", origin, reason)
            except _Ignored as reason:
                logger.info("receipts from %s ignored: %s", origin, reason)

    async def _apply_receipt(
        self, origin: str, snapshot: RoomSnapshot, user: object, receipt: object
    ) -> None:
        user_id = _user_of(origin, user, "receipt user")
        self._joined(snapshot, user_id)
        if not isinstance(receipt, dict) or not isinstance(receipt.get("data"), dict):
            raise _Ignored(f"the receipt of {user_id} must be an object with data")
        event_ids = receipt.get("event_ids")
        if not isinstance(event_ids, list) or not event_ids:
            raise _Ignored(f"the receipt of {user_id} must name events")
        checked = [EventID(_string(e, "event ID")) for e in event_ids]
        ts = _position(receipt["data"].get("ts"), "ts")
        thread_id = receipt["data"].get("thread_id")
        if thread_id is not None:
            thread_id = _string(thread_id, "thread_id")
        for event_id in checked:
            if not await self._receipts.apply_remote_receipt(
                user_id, snapshot.room_id, event_id, ts, thread_id
            ):
                logger.info("receipt of %s for %s not stored: unknown or older", user_id, event_id)

    async def _on_direct_to_device(self, origin: str, content: JsonDict) -> None:
        """Server-Server API, "Send-to-device messaging"."""
        sender = _user_of(origin, content.get("sender"), "sender")
        event_type = _string(content.get("type"), "type")
        message_id = _string(content.get("message_id"), "message_id")
        messages = content.get("messages")
        if not isinstance(messages, dict):
            raise _Ignored("messages must be an object")
        local: dict[UserID, dict[str, JsonDict]] = {}
        for user, by_device in messages.items():
            if not isinstance(by_device, dict) or not all(
                isinstance(device, str) and device and isinstance(message, dict)
                for device, message in by_device.items()
            ):
                raise _Ignored("messages must map users to devices to objects")
            if any(
                len(orjson.dumps(message)) > MAX_MESSAGE_BYTES for message in by_device.values()
            ):
                raise _Ignored(f"a message is larger than {MAX_MESSAGE_BYTES} bytes")
            if is_valid_user_id(user) and self._is_local(user):
                local[UserID(user)] = by_device
            else:
                logger.info(
                    "to-device %s from %s: %r is not a local user", message_id, origin, user
                )
        if local and not await self._to_device.deliver_remote(
            origin, sender, event_type, message_id, local
        ):
            logger.info("to-device %s from %s not delivered again", message_id, origin)

    async def _on_device_list_update(self, origin: str, content: JsonDict) -> None:
        """Server-Server API, "Device Management"."""
        user_id = _user_of(origin, content.get("user_id"), "user_id")
        device_id = _string(content.get("device_id"), "device_id")
        stream_id = _position(content.get("stream_id"), "stream_id")
        prev_ids = content.get("prev_id", [])
        if prev_ids is None:
            prev_ids = []
        if not isinstance(prev_ids, list):
            raise _Ignored("prev_id must be a list")
        prev_ids = [_position(p, "prev_id") for p in prev_ids]
        deleted = content.get("deleted", False)
        name = content.get("device_display_name")
        if not isinstance(deleted, bool):
            raise _Ignored("deleted must be a boolean")
        if name is not None and (not isinstance(name, str) or len(name) > _MAX_ID_LENGTH):
            raise _Ignored(f"device_display_name must be a string of at most {_MAX_ID_LENGTH}")
        keys = None if deleted else _device_keys(content.get("keys"), user_id, device_id)
        if not await self._tracked(user_id):
            raise _Ignored(f"no local user shares a room with {user_id}")
        device = RemoteDevice(device_id, name, keys)
        async with self._remote_lock:
            cached = await self._device_list(user_id)
            seen = self._seen.get(user_id) or ()
            if stream_id in seen or (
                cached is not None
                and not cached.stale
                and cached.stream_id is not None
                and stream_id <= cached.stream_id
            ):
                return  # already applied
            if (
                cached is None
                or cached.stale
                or not prev_ids
                or any(p != cached.stream_id and p not in seen for p in prev_ids)
            ):
                logger.info("device list of %s missed updates (at %s): stale", user_id, stream_id)
                await self._store.mark_stale(user_id)
                self._resync_wanted.set()
            else:
                await self._store.apply_update(user_id, stream_id, device, deleted=deleted)
                self._seen.put(user_id, (*seen, stream_id)[-_SEEN_PER_USER:])
            self._invalidate(user_id)
        await self._device_lists.notify_user_changed(user_id)

    async def _on_signing_key_update(self, origin: str, content: JsonDict) -> None:
        """Server-Server API, "End-to-End Encryption"."""
        user_id = _user_of(origin, content.get("user_id"), "user_id")
        keys = _cross_signing_keys(content, user_id)
        if not keys:
            raise _Ignored("neither master_key nor self_signing_key")
        if not await self._tracked(user_id):
            raise _Ignored(f"no local user shares a room with {user_id}")
        async with self._remote_lock:
            await self._store.set_cross_signing_keys(user_id, keys)
            self._invalidate(user_id)
        await self._device_lists.notify_user_changed(user_id)

    async def _on_presence(self, origin: str, content: JsonDict) -> None:
        """Server-Server API, "Presence": each pushed state on its own."""
        if self._presence is None or not self._presence.enabled:
            return
        push = content.get("push")
        if not isinstance(push, list):
            raise _Ignored("push must be a list")
        updates: list[JsonDict] = []
        for item in push:
            try:
                if not isinstance(item, dict):
                    raise _Ignored("a presence update must be an object")
                user_id = _user_of(origin, item.get("user_id"), "user_id")
                presence = item.get("presence")
                if presence not in STATES:
                    raise _Ignored(f"presence of {user_id} is not one of {STATES}")
                status_msg = item.get("status_msg")
                if status_msg is not None and not isinstance(status_msg, str):
                    raise _Ignored("status_msg must be a string")
                active = item.get("currently_active", False)
                if not isinstance(active, bool):
                    raise _Ignored("currently_active must be a boolean")
                ago = _position(item.get("last_active_ago", 0), "last_active_ago")
                if not await self._tracked(user_id):
                    raise _Ignored(f"no local user shares a room with {user_id}")
                updates.append(
                    {
                        "user_id": user_id,
                        "presence": presence,
                        "status_msg": status_msg,
                        "currently_active": active,
                        "last_active_ago": ago,
                    }
                )
            except _Ignored as reason:
                logger.info("presence update from %s ignored: %s", origin, reason)
        if updates:
            await self._presence.set_remote(updates)

    # -- remote device lists ----------------------------------------------------------

    async def _tracked(self, user_id: UserID) -> bool:
        """Whether a local user shares a room with (remote) ``user_id``."""
        for room_id, (membership, _) in list((await self._index.memberships(user_id)).items()):
            if membership != "join":
                continue
            snapshot = await self._state.get_room(room_id)
            if snapshot is not None and any(
                m == "join" and self._is_local(u) for u, m in snapshot.memberships.items()
            ):
                return True
        return False

    def _invalidate(self, user_id: UserID) -> None:
        self._lists_version += 1
        self._lists.pop(user_id)

    async def _device_list(self, user_id: UserID) -> RemoteDeviceList | None:
        cached = self._lists.get(user_id)
        if cached is not None:
            return cached[0]
        version = self._lists_version
        loaded = await self._store.get_device_list(user_id)
        if version == self._lists_version:
            self._lists.put(user_id, (loaded,))
        return loaded

    async def _fetch(self, user_id: UserID, fetch: UserDevicesFetcher) -> RemoteDeviceList | None:
        try:
            async with asyncio.timeout(REMOTE_TIMEOUT_S):
                body = await fetch(server_name_of(user_id), user_id)
        except Exception as exc:
            logger.info("fetching the device list of %s failed: %r", user_id, exc)
            return None
        fetched = parse_user_devices(user_id, body)
        if fetched is None:
            logger.info("the device list of %s fetched from its server is malformed", user_id)
        return fetched

    async def resync_user(self, user_id: UserID, fetch: UserDevicesFetcher) -> bool:
        """Fetch ``user_id``'s device list from their server (``fetch``: GET
        /_matrix/federation/v1/user/devices/{userId}) and store it in place of the cache,
        no longer stale; local users hear of the change. Whether it was stored (not when
        the fetch failed or its answer was malformed: the cache stays as it was)."""
        fetched = await self._fetch(user_id, fetch)
        if fetched is None or fetched.stream_id is None:
            return False
        async with self._remote_lock:
            await self._store.replace_device_list(
                user_id, fetched.stream_id, fetched.devices, dict(fetched.cross_signing)
            )
            self._seen.put(user_id, (fetched.stream_id,))
            self._invalidate(user_id)
        await self._device_lists.notify_user_changed(user_id)
        return True

    async def resync_stale(self, fetch: UserDevicesFetcher) -> int:
        """Fetch again (a batch of) the stale device lists of users still sharing a room
        with a local user; forget those of the others. How many were stored."""
        users = await self._store.get_stale_users(_RESYNC_BATCH)
        limit = asyncio.Semaphore(_RESYNC_CONCURRENCY)

        async def resync(user_id: UserID) -> bool:
            async with limit:
                if await self._tracked(user_id):
                    return await self.resync_user(user_id, fetch)
                async with self._remote_lock:
                    await self._store.forget_device_list(user_id)
                    self._invalidate(user_id)
                return False

        done = await asyncio.gather(*(resync(user_id) for user_id in users))
        if len(users) == _RESYNC_BATCH and any(done):
            self._resync_wanted.set()
        return sum(done)

    async def _resync_forever(self, fetch: UserDevicesFetcher) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESYNC_INTERVAL_S):
                    await self._resync_wanted.wait()
            self._resync_wanted.clear()
            try:
                await self.resync_stale(fetch)
            except Exception:
                logger.exception("fetching stale device lists failed; retrying later")

    async def _device_list_for_query(self, user_id: UserID) -> RemoteDeviceList | None:
        """The user's device list: the cache if current, else fetched (and stored if the
        user is tracked); a stale cache if fetching fails; None if nothing is known."""
        cached = await self._device_list(user_id)
        if cached is not None and not cached.stale:
            return cached
        fetch = self._fetch_user_devices
        if fetch is not None:
            if not await self._tracked(user_id):
                return await self._fetch(user_id, fetch)
            if await self.resync_user(user_id, fetch):
                return await self._device_list(user_id)
        return cached if cached is not None and cached.stream_id is not None else None

    async def query_remote_keys(self, query: Mapping[UserID, Sequence[str]]) -> JsonDict:
        """``E2eKeysService.remote_keys``: the device, master and self-signing keys of
        remote users (``/keys/query`` for other servers' users)."""
        users = list(query)
        lists = await asyncio.gather(*(self._device_list_for_query(u) for u in users))
        result: JsonDict = {
            "device_keys": {},
            "master_keys": {},
            "self_signing_keys": {},
            "failures": {},
        }
        for user_id, found in zip(users, lists, strict=True):
            if found is None:
                result["failures"][server_name_of(user_id)] = _UNREACHABLE
                continue
            wanted = set(query[user_id])
            devices: JsonDict = {}
            for device in found.devices:
                if device.keys_json is not None and (not wanted or device.device_id in wanted):
                    keys = orjson.loads(device.keys_json)
                    name = {"device_display_name": device.display_name}
                    keys["unsigned"] = name if device.display_name is not None else {}
                    devices[device.device_id] = keys
            result["device_keys"][user_id] = devices
            for key_type, key_json in found.cross_signing:
                result[f"{key_type}_keys"][user_id] = orjson.loads(key_json)
        return result

    async def claim_remote_keys(self, query: Mapping[UserID, Mapping[DeviceID, str]]) -> JsonDict:
        """``E2eKeysService.remote_keys``: one-time keys of remote users' devices, claimed
        from each user's server (``POST /user/keys/claim``)."""
        by_server: dict[str, dict[str, dict[str, str]]] = {}
        for user_id, devices in query.items():
            by_server.setdefault(server_name_of(user_id), {})[user_id] = {
                str(d): algorithm for d, algorithm in devices.items()
            }
        servers = list(by_server)
        answers = await asyncio.gather(*(self._claim_at(s, by_server[s]) for s in servers))
        result: JsonDict = {"one_time_keys": {}, "failures": {}}
        for server, answer in zip(servers, answers, strict=True):
            if answer is None:
                result["failures"][server] = _UNREACHABLE
            else:
                result["one_time_keys"].update(answer)
        return result

    async def _claim_at(
        self, server: str, query: Mapping[str, Mapping[str, str]]
    ) -> dict[str, JsonDict] | None:
        if self._claim_keys is None:
            return None
        try:
            async with asyncio.timeout(REMOTE_TIMEOUT_S):
                body = await self._claim_keys(server, {"one_time_keys": query})
        except Exception as exc:
            logger.info("claiming keys at %s failed: %r", server, exc)
            return None
        keys = body.get("one_time_keys") if isinstance(body, dict) else None
        if not isinstance(keys, dict):
            return None
        return {
            user: by_device
            for user, by_device in keys.items()
            if user in query
            and isinstance(by_device, dict)
            and all(d in query[user] and isinstance(k, dict) for d, k in by_device.items())
        }

    # -- outbound ----------------------------------------------------------------------

    def _servers_in(self, snapshot: RoomSnapshot) -> set[str]:
        servers = {server_name_of(u) for u, m in snapshot.memberships.items() if m == "join"}
        servers.discard(self._server_name)
        return servers

    async def _servers_sharing_rooms(self, user_id: UserID) -> set[str]:
        """The other servers with a member joined to a room ``user_id`` is joined to."""
        servers: set[str] = set()
        for room_id, (membership, _) in list((await self._index.memberships(user_id)).items()):
            snapshot = await self._state.get_room(room_id) if membership == "join" else None
            if snapshot is not None:
                servers |= self._servers_in(snapshot)
        return servers

    async def _send_ephemeral(self, room_id: RoomID, edu_type: str, content: JsonDict) -> None:
        snapshot = await self._state.get_room(room_id)
        for destination in sorted(self._servers_in(snapshot) if snapshot is not None else ()):
            await self._sender.send_edu(destination, edu_type, content, durable=False)

    async def _on_local_typing(self, room_id: RoomID, user_id: UserID, typing: bool) -> None:
        if not self._is_local(user_id):
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
        by_server: dict[str, list[JsonDict]] = {}
        for entry in changed:
            if not self._is_local(entry.user_id):
                continue
            state = _push_state(entry, now)
            for server in await self._servers_sharing_rooms(entry.user_id):
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
        by_server: dict[str, dict[UserID, JsonDict]] = {}
        for room_id, user_id in joins:
            snapshot = await self._state.get_room(room_id)
            if snapshot is None or snapshot.memberships.get(user_id) != "join":
                continue
            if self._is_local(user_id):
                servers, users = self._servers_in(snapshot), [user_id]
            else:
                servers = {server_name_of(user_id)}
                users = [u for u in snapshot.joined_members() if self._is_local(u)]
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

    async def _send_to_device(
        self, sender: UserID, event_type: str, messages: Mapping[UserID, Mapping[str, JsonDict]]
    ) -> None:
        """``ToDeviceService.remote_sender``: one m.direct_to_device per server."""
        by_server: dict[str, dict[str, dict[str, JsonDict]]] = {}
        for user_id, by_device in messages.items():
            by_server.setdefault(server_name_of(user_id), {})[user_id] = dict(by_device)
        edus = [
            (
                server,
                "m.direct_to_device",
                {
                    "sender": sender,
                    "type": event_type,
                    "message_id": secrets.token_hex(16),
                    "messages": part,
                },
            )
            for server, part in sorted(by_server.items())
        ]
        try:
            await self._sender.send_durable_edus(edus)
        except Exception:
            logger.exception("queueing to-device %s of %s failed", event_type, sender)

    async def _on_local_devices(self, user_id: UserID, device_ids: Sequence[str]) -> None:
        """A local user's devices were created or deleted, or got new keys: one
        m.device_list_update per device, next in the user's sequence."""
        if not self._is_local(user_id) or not device_ids:
            return
        try:
            async with self._outbound_lock:
                destinations = await self._servers_sharing_rooms(user_id)
                if not destinations:
                    return
                current = await self._e2e_keys.federation_device_list(user_id)
                ids = list(dict.fromkeys(device_ids))
                last = await self._store.allocate_local_stream_ids(user_id, len(ids))
                edus: list[tuple[str, str, JsonDict]] = []
                for stream_id, device_id in enumerate(ids, start=last + 1):
                    content: JsonDict = {
                        "user_id": user_id,
                        "device_id": device_id,
                        "stream_id": stream_id,
                        "prev_id": [stream_id - 1] if stream_id > 1 else [],
                    }
                    if device_id not in current.device_ids:
                        content["deleted"] = True
                    elif device_id in current.device_keys:
                        content["keys"] = current.device_keys[DeviceID(device_id)]
                    edus += [(d, "m.device_list_update", content) for d in sorted(destinations)]
                await self._sender.send_durable_edus(edus)
        except Exception:
            logger.exception("sending the device list update of %s failed", user_id)

    async def _on_local_cross_signing(self, user_id: UserID, key_types: Collection[str]) -> None:
        if not self._is_local(user_id) or not _CROSS_SIGNING_FIELDS.keys() & set(key_types):
            return
        try:
            destinations = await self._servers_sharing_rooms(user_id)
            if not destinations:
                return
            current = await self._e2e_keys.federation_device_list(user_id)
            content: JsonDict = {"user_id": user_id}
            for key_type, field_name in _CROSS_SIGNING_FIELDS.items():
                if key_type in current.cross_signing:
                    content[field_name] = current.cross_signing[key_type]
            await self._sender.send_durable_edus(
                [(d, "m.signing_key_update", content) for d in sorted(destinations)]
            )
        except Exception:
            logger.exception("sending the signing key update of %s failed", user_id)

    async def user_devices(self, user_id: str) -> JsonDict:
        """``GET /_matrix/federation/v1/user/devices/{userId}``: a local user's devices
        and keys, with the stream_id of the last m.device_list_update sent for them."""
        if not is_valid_user_id(user_id) or not self._is_local(user_id):
            raise invalid_param(f"{user_id} is not a user of this server")
        local = UserID(user_id)
        async with self._outbound_lock:
            stream_id = await self._store.get_local_stream_id(local)
            current = await self._e2e_keys.federation_device_list(local)
        devices: list[JsonDict] = []
        for device_id in sorted(current.device_ids):
            device: JsonDict = {"device_id": device_id}
            if device_id in current.device_keys:
                device["keys"] = current.device_keys[device_id]
            devices.append(device)
        result: JsonDict = {"user_id": local, "stream_id": stream_id, "devices": devices}
        for key_type, field_name in _CROSS_SIGNING_FIELDS.items():
            if key_type in current.cross_signing:
                result[field_name] = current.cross_signing[key_type]
        return result
