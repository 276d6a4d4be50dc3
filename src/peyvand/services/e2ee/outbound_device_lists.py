"""Local users' device lists as other servers see them (Server-Server API, "Device
Management" and "End-to-End Encryption"): a local user's new and deleted devices and new
device keys go out as ``m.device_list_update`` (numbered per user in
``local_device_list_streams``), new master or self-signing keys as
``m.signing_key_update``, durably, to every server sharing a room with the user; and
``GET /user/devices/{userId}`` answers with the devices and the last number sent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence

from peyvand.errors import invalid_param
from peyvand.services.e2ee.device_lists import DeviceListService
from peyvand.services.e2ee.keys import E2eKeysService
from peyvand.services.e2ee.remote_device_lists import CROSS_SIGNING_FIELDS
from peyvand.services.federation.edu_support import EduSender
from peyvand.services.federation.room_sharing import RoomSharing
from peyvand.storage.remote_devices import RemoteDeviceStore
from peyvand.types import DeviceID, JsonDict, ServerName, UserID, is_valid_user_id

logger = logging.getLogger(__name__)


class OutboundDeviceLists:
    def __init__(
        self,
        sharing: RoomSharing,
        sender: EduSender,
        device_lists: DeviceListService,
        e2e_keys: E2eKeysService,
        store: RemoteDeviceStore,
    ) -> None:
        """Registers its listeners on ``device_lists`` and ``e2e_keys``."""
        self._sharing = sharing
        self._sender = sender
        self._e2e_keys = e2e_keys
        self._store = store
        # Serialises local sequence numbers with their EDUs.
        self._lock = asyncio.Lock()
        device_lists.device_listeners.append(self.on_local_devices)
        e2e_keys.device_keys_listeners.append(self.on_local_devices)
        e2e_keys.cross_signing_listeners.append(self.on_local_cross_signing)

    async def on_local_devices(self, user_id: UserID, device_ids: Sequence[str]) -> None:
        """A local user's devices were created or deleted, or got new keys: one
        m.device_list_update per device, next in the user's sequence."""
        if not self._sharing.is_local(user_id) or not device_ids:
            return
        try:
            async with self._lock:
                destinations = await self._sharing.servers_sharing_rooms(user_id)
                if not destinations:
                    return
                current = await self._e2e_keys.federation_device_list(user_id)
                ids = list(dict.fromkeys(device_ids))
                last = await self._store.allocate_local_stream_ids(user_id, len(ids))
                edus: list[tuple[ServerName, str, JsonDict]] = []
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

    async def on_local_cross_signing(self, user_id: UserID, key_types: Collection[str]) -> None:
        """A local user's master or self-signing key changed: one m.signing_key_update."""
        if not self._sharing.is_local(user_id) or not CROSS_SIGNING_FIELDS.keys() & set(key_types):
            return
        try:
            destinations = await self._sharing.servers_sharing_rooms(user_id)
            if not destinations:
                return
            current = await self._e2e_keys.federation_device_list(user_id)
            content: JsonDict = {"user_id": user_id}
            for key_type, field_name in CROSS_SIGNING_FIELDS.items():
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
        if not is_valid_user_id(user_id) or not self._sharing.is_local(user_id):
            raise invalid_param(f"{user_id} is not a user of this server")
        local = UserID(user_id)
        async with self._lock:
            stream_id = await self._store.get_local_stream_id(local)
            current = await self._e2e_keys.federation_device_list(local)
        devices: list[JsonDict] = []
        for device_id in sorted(current.device_ids):
            device: JsonDict = {"device_id": device_id}
            if device_id in current.device_keys:
                device["keys"] = current.device_keys[device_id]
            devices.append(device)
        result: JsonDict = {"user_id": local, "stream_id": stream_id, "devices": devices}
        for key_type, field_name in CROSS_SIGNING_FIELDS.items():
            if key_type in current.cross_signing:
                result[field_name] = current.cross_signing[key_type]
        return result
