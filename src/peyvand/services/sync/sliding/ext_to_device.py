"""The ``to_device`` extension of simplified sliding sync (MSC3885, as Synapse 1.163's
``get_to_device_extension_response``).

The client pages through its device's inbox with the extension's own token: each response
carries ``next_batch``, and a request whose ``since`` is a ``next_batch`` confirms that the
messages before it arrived, so they are deleted then and only then (as /sync's
acknowledgement, Client-Server API "Send-to-Device messaging"); a lost response is thus
delivered again. Without ``since`` the inbox is read from its start.
"""

from __future__ import annotations

from typing import Protocol

from peyvand.services.sync.sliding.ext_request import ToDeviceRequest
from peyvand.services.sync.sync import ToDeviceSource
from peyvand.storage.to_device import InboxMessage
from peyvand.types import DeviceID, JsonDict, UserID


class InboxPages(Protocol):
    """A device's inbox read by position (``storage.to_device.ToDeviceStore``)."""

    async def get_messages(
        self, user_id: UserID, device_id: str, after: int, until: int, limit: int
    ) -> list[InboxMessage]: ...


class ToDeviceExtension:
    def __init__(self, source: ToDeviceSource, pages: InboxPages) -> None:
        self._source = source
        self._pages = pages

    async def respond(
        self, user_id: UserID, device_id: DeviceID, request: ToDeviceRequest, upto: int
    ) -> JsonDict:
        """``{"next_batch", "events"}``: the device's messages after ``since`` up to the
        to-device position ``upto``, at most ``limit``; ``next_batch`` is the last one's
        position when more remain, else ``upto``."""
        after = request.since or 0
        if after > upto:
            # A since from the future (Synapse: an empty page, nothing deleted).
            return {"next_batch": str(after), "events": []}
        if request.since is not None:
            await self._source.acknowledge(user_id, device_id, after)
        # The sync source answers an idle inbox from memory and pages by 100.
        events, position = await self._source.for_sync(user_id, device_id, after, upto)
        if len(events) > request.limit:
            page = await self._pages.get_messages(user_id, device_id, after, upto, request.limit)
            events = [m.message for m in page]
            position = page[-1].stream_id if len(page) == request.limit else upto
        return {"next_batch": str(position), "events": events}
