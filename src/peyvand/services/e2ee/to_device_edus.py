"""Send-to-device messages over federation (Server-Server API, "Send-to-device
messaging"), both ways: ``m.direct_to_device`` EDUs from other servers are delivered to
local devices once per (origin, message_id); local messages for remote users go out as
one durable ``m.direct_to_device`` per destination with a random message_id
(``ToDeviceService.remote_sender``)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping

import orjson

from peyvand.services.e2ee.to_device import MAX_MESSAGE_BYTES, ToDeviceService
from peyvand.services.federation.edu_support import EduSender, IgnoredEdu, edu_string, edu_user_of
from peyvand.types import JsonDict, ServerName, UserID, is_valid_user_id, server_name_of

logger = logging.getLogger(__name__)


class ToDeviceEdus:
    def __init__(
        self, server_name: ServerName, to_device: ToDeviceService, sender: EduSender
    ) -> None:
        """Becomes ``to_device``'s sender of messages for remote users."""
        self._server_name = server_name
        self._to_device = to_device
        self._sender = sender
        to_device.remote_sender = self.send_to_device

    async def on_direct_to_device(self, origin: ServerName, content: JsonDict) -> None:
        """An ``m.direct_to_device`` EDU from ``origin``."""
        sender = edu_user_of(origin, content.get("sender"), "sender")
        event_type = edu_string(content.get("type"), "type")
        message_id = edu_string(content.get("message_id"), "message_id")
        messages = content.get("messages")
        if not isinstance(messages, dict):
            raise IgnoredEdu("messages must be an object")
        local: dict[UserID, dict[str, JsonDict]] = {}
        for user, by_device in messages.items():
            if not isinstance(by_device, dict) or not all(
                isinstance(device, str) and device and isinstance(message, dict)
                for device, message in by_device.items()
            ):
                raise IgnoredEdu("messages must map users to devices to objects")
            if any(
                len(orjson.dumps(message)) > MAX_MESSAGE_BYTES for message in by_device.values()
            ):
                raise IgnoredEdu(f"a message is larger than {MAX_MESSAGE_BYTES} bytes")
            if is_valid_user_id(user) and server_name_of(user) == self._server_name:
                local[UserID(user)] = by_device
            else:
                logger.info(
                    "to-device %s from %s: %r is not a local user", message_id, origin, user
                )
        if local and not await self._to_device.deliver_remote(
            origin, sender, event_type, message_id, local
        ):
            logger.info("to-device %s from %s not delivered again", message_id, origin)

    async def send_to_device(
        self, sender: UserID, event_type: str, messages: Mapping[UserID, Mapping[str, JsonDict]]
    ) -> None:
        """``ToDeviceService.remote_sender``: one m.direct_to_device per server."""
        by_server: dict[ServerName, dict[str, dict[str, JsonDict]]] = {}
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
