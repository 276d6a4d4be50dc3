"""Send-to-device messaging (Client-Server API, "Send-to-Device messaging").

``PUT /sendToDevice`` stores one message per recipient device at one new position of the
to-device stream, in one transaction, and wakes the recipients' syncs. /sync returns a
device's messages in order, at most ``MAX_PER_SYNC`` at a time, and deletes them only when
the device syncs again with a token at or past them ("the server should infer that any
send-to-device messages in that response have been delivered successfully").

Two in-memory maps keep an idle sync free of queries: the newest position sent to each
device since start-up (anything older is at most the start-up position), and the
position up to which each device's inbox is known to be empty.

Federation: messages for other servers' users go to ``remote_sender`` (once per applied
txnId; without one they are dropped), and ``deliver_remote`` stores the messages of an
``m.direct_to_device`` EDU for local devices, once per (origin, message_id).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import orjson

from peyvand.errors import Errcode, MatrixError, bad_json, invalid_param
from peyvand.lru import LRU
from peyvand.services.accounts.requester import Requester
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.streams import Stream
from peyvand.storage.to_device import InboxRow, ToDeviceStore
from peyvand.types import JsonDict, ServerName, UserID, is_valid_user_id, server_name_of

logger = logging.getLogger(__name__)

# send_to_device.md, "Server behaviour": "100 messages is recommended as a reasonable limit."
MAX_PER_SYNC = 100
# One message's content, as JSON: the PDU size limit, so a message fits a federation EDU.
MAX_MESSAGE_BYTES = 65_536
# Recipient devices of one request, after "*" is expanded.
MAX_RECIPIENT_DEVICES = 10_000
ALL_DEVICES = "*"
_KNOWN_EMPTY_CACHE = 100_000

DeviceKey = tuple[UserID, str]
# Called with (sender, event type, {remote user: {device ID or "*": content}}) for the
# remote recipients of a local send.
RemoteToDeviceSender = Callable[
    [UserID, str, Mapping[UserID, Mapping[str, JsonDict]]], Awaitable[None]
]
# Called with the position and recipients of every stored send (application services).
StoredHook = Callable[[int, AbstractSet[UserID]], None]
# The sender device under which received EDUs' message IDs are recorded (local device IDs
# are never empty), with the origin server as the "user".
_FEDERATION_DEVICE = ""


def parse_messages(messages: Any) -> dict[UserID, dict[str, JsonDict]]:
    """Check the ``messages`` body of /sendToDevice: ``{user_id: {device_id: content}}``
    with object contents (M_BAD_JSON otherwise, M_INVALID_PARAM for a malformed user ID,
    M_TOO_LARGE for an oversized message)."""
    if not isinstance(messages, dict):
        raise bad_json("'messages' must be an object")
    parsed: dict[UserID, dict[str, JsonDict]] = {}
    for user_id, by_device in messages.items():
        if not isinstance(by_device, dict):
            raise bad_json(f"messages for {user_id} must be an object of device IDs")
        if not is_valid_user_id(user_id):
            raise invalid_param(f"{user_id!r} is not a valid user ID")
        for device_id, content in by_device.items():
            if not isinstance(content, dict):
                raise bad_json(f"the message for {user_id} {device_id} must be an object")
            if len(orjson.dumps(content)) > MAX_MESSAGE_BYTES:
                raise MatrixError(
                    Errcode.TOO_LARGE, f"A message must not exceed {MAX_MESSAGE_BYTES} bytes"
                )
        parsed[UserID(user_id)] = by_device
    return parsed


class ToDeviceService:
    def __init__(self, server_name: ServerName, store: ToDeviceStore, notifier: Notifier) -> None:
        self._server_name = server_name
        self._store = store
        self._notifier = notifier
        self._position = 0
        self._startup_position = 0
        self._write_lock = asyncio.Lock()
        # The newest position sent to a device since start-up; absent: at most start-up.
        self._newest: dict[DeviceKey, int] = {}
        # The position up to which a device's inbox is known to be empty (acknowledged).
        self._empty_up_to: LRU[DeviceKey, int] = LRU(_KNOWN_EMPTY_CACHE)
        # In a deployment: the newest position another process stored for each user
        # (``written_elsewhere``), and for anyone when it did not say whom.
        self._elsewhere: dict[str, int] = {}
        self._elsewhere_all = 0
        self.remote_sender: RemoteToDeviceSender | None = None
        self.stored_hooks: list[StoredHook] = []

    async def start(self) -> None:
        """Resume the stream at its stored position."""
        self._position = self._startup_position = await self._store.get_position()
        self._notifier.advance(Stream.TO_DEVICE, self._position, ())

    async def resume(self) -> None:
        """Write above what is stored or announced (``wiring.primary`` took the role)."""
        async with self._write_lock:
            stored = await self._store.get_position()
            self._position = max(self._position, stored, self._notifier.current_token.to_device)

    async def stored_position(self) -> int:
        """The stream's position in the database, whichever process wrote it (a
        deployment's ``StreamRelay`` compares it with this process's: issue 21)."""
        return await self._store.get_position()

    async def send(
        self,
        requester: Requester,
        event_type: str,
        txn_id: str,
        messages: Mapping[UserID, Mapping[str, JsonDict]],
    ) -> None:
        """``PUT /sendToDevice/{eventType}/{txnId}``: one message per device ("*": every
        device of the user, an explicit device ID taking precedence); unknown devices are
        skipped. A retry of ``txnId`` by the same device sends nothing (transaction IDs
        are scoped to the request path, as for room events)."""
        local: dict[UserID, Mapping[str, JsonDict]] = {}
        remote: dict[UserID, Mapping[str, JsonDict]] = {}
        for user_id, by_device in messages.items():
            if server_name_of(user_id) == self._server_name:
                local[user_id] = by_device
            elif self.remote_sender is not None:
                remote[user_id] = by_device
            else:
                logger.info(
                    "to-device %s for remote user %s dropped: no federation", event_type, user_id
                )
        sender = requester.user_id
        rows = await self._inbox_rows(sender, event_type, local)
        if len(rows) > MAX_RECIPIENT_DEVICES:
            raise MatrixError(
                Errcode.TOO_LARGE, f"At most {MAX_RECIPIENT_DEVICES} devices per request"
            )
        applied = await self._add(sender, requester.device_id, f"{event_type}/{txn_id}", rows)
        if applied and remote and self.remote_sender is not None:
            await self.remote_sender(sender, event_type, remote)

    async def deliver_remote(
        self,
        origin: ServerName,
        sender: UserID,
        event_type: str,
        message_id: str,
        messages: Mapping[UserID, Mapping[str, JsonDict]],
    ) -> bool:
        """Store the messages of an ``m.direct_to_device`` EDU from ``origin`` for local
        devices (``messages`` holds local users only, checked by the caller). A message ID
        ``origin`` already sent delivers nothing again. Whether it was delivered."""
        rows = await self._inbox_rows(sender, event_type, messages)
        if len(rows) > MAX_RECIPIENT_DEVICES:
            logger.info("to-device %s from %s dropped: too many devices", message_id, origin)
            return False
        return await self._add(UserID(origin), _FEDERATION_DEVICE, message_id, rows)

    async def _inbox_rows(
        self, sender: UserID, event_type: str, messages: Mapping[UserID, Mapping[str, JsonDict]]
    ) -> list[InboxRow]:
        """One row per existing recipient device ("*": every device of the user, an
        explicit device ID taking precedence); unknown devices are skipped."""
        devices = await self._store.get_device_ids(list(messages)) if messages else {}
        rows: list[InboxRow] = []
        for user_id, by_device in messages.items():
            existing = devices.get(user_id, set())
            encoded = {
                device_id: _encode(event_type, sender, content)
                for device_id, content in by_device.items()
            }
            wildcard = encoded.pop(ALL_DEVICES, None)
            targets = dict.fromkeys(existing, wildcard) if wildcard is not None else {}
            targets.update((d, m) for d, m in encoded.items() if d in existing)
            rows.extend(InboxRow(user_id, d, m) for d, m in targets.items())
        return rows

    async def _add(
        self, sender: UserID, sender_device: str, txn_id: str, rows: Sequence[InboxRow]
    ) -> bool:
        """Store ``rows`` at the next position unless ``txn_id`` was applied; wake the
        recipients. Whether they were stored."""
        async with self._write_lock:
            position = self._position + 1
            if not await self._store.add_messages(sender, sender_device, txn_id, position, rows):
                return False
            self._position = position
            for row in rows:
                self._newest[(row.user_id, row.device_id)] = position
            recipients = {row.user_id for row in rows}
            self._notifier.advance(Stream.TO_DEVICE, position, recipients)
            for hook in self.stored_hooks:
                hook(position, recipients)
        return True

    async def for_sync(
        self, user_id: UserID, device_id: str, since: int | None, now: int
    ) -> tuple[list[JsonDict], int]:
        """The device's messages after ``since`` up to ``now``, and the to-device position
        for the next token: ``now``, or the last message's if more remain (at most
        ``MAX_PER_SYNC`` per sync)."""
        key = (user_id, device_id)
        after = since or 0
        if after >= now or self._newest_of(key) <= after:
            return [], max(after, now)
        found = await self._store.get_messages(user_id, device_id, after, now, MAX_PER_SYNC + 1)
        if len(found) <= MAX_PER_SYNC:
            return [m.message for m in found], now
        found = found[:MAX_PER_SYNC]
        return [m.message for m in found], found[-1].stream_id

    async def acknowledge(self, user_id: UserID, device_id: str, since: int) -> None:
        """A sync from ``since``: the device received everything up to it, so delete
        those messages (no query when they are known to be gone)."""
        key = (user_id, device_id)
        empty_up_to = self._empty_up_to.get(key)
        if empty_up_to is not None and (
            since <= empty_up_to or self._newest_of(key) <= empty_up_to
        ):
            return
        await self._store.delete_messages(user_id, device_id, since)
        self._empty_up_to.put(key, since)

    def _newest_of(self, key: DeviceKey) -> int:
        """The newest position a message to the device may have (at most)."""
        newest = self._newest.get(key, self._startup_position)
        if self._elsewhere_all or self._elsewhere:
            newest = max(newest, self._elsewhere_all, self._elsewhere.get(key[0], 0))
        return newest

    def written_elsewhere(self, position: int, users: Collection[str] | None) -> None:
        """Another process of the deployment stored messages for ``users`` (None: it did
        not say whom) at ``position``: their devices' inboxes are read again."""
        if users is None or len(self._elsewhere) + len(users) > _KNOWN_EMPTY_CACHE:
            self._elsewhere_all = max(self._elsewhere_all, position)
            self._elsewhere.clear()
            return
        for user_id in users:
            self._elsewhere[user_id] = position

    async def on_devices_deleted(self, user_id: UserID, device_ids: Sequence[str]) -> None:
        """Drop deleted devices' inboxes: they will never sync again."""
        await self._store.delete_devices(user_id, device_ids)
        for device_id in device_ids:
            self._newest.pop((user_id, device_id), None)
            self._empty_up_to.pop((user_id, device_id))


def _encode(event_type: str, sender: UserID, content: JsonDict) -> str:
    """The stored message: the event as /sync returns it (send_to_device.md, ``Event``)."""
    return orjson.dumps({"type": event_type, "sender": sender, "content": content}).decode()
