"""Federation senders that stand in for each other (issue 21: "federation senders
(sharded by destination)", and "keep running when one of them dies").

The destinations are shared among the ``federation_sender`` processes by a hash of their
name, one share per sender in configured order. Each share is a lease
(``wiring.leased.Leased``, ``defer_to`` its sender): the sender takes its own share
whenever it contends; while it does not (stopped, killed, its machine gone), another
process that stands in (``stands_in_for_senders``: the other senders and the event
writers) takes the share once the lease has expired (within the lease period and a
retry, about 8 s) and sends the share's queue, caught up as after a restart; once the
sender contends again, the stand-in hands the share back at its next renewal and the
sender takes it at its next try. The holder of the first share also tells other servers
of presence changes and joins (``PresenceService.tell_servers``).
"""

from __future__ import annotations

from peyvand.config import WorkersConfig
from peyvand.federation.sender import FederationSender
from peyvand.services.sync.presence import PresenceService
from peyvand.storage.leases import LeaseStore
from peyvand.wiring.leased import Leased
from peyvand.wiring.lifecycle import Component


class SenderShard:
    """Share ``index`` of the destinations, sent by this process while it holds the
    share's lease."""

    def __init__(
        self, sender: FederationSender, index: int, presence: PresenceService | None
    ) -> None:
        """``presence``: told to tell other servers while this share is held (the
        first share's)."""
        self._sender = sender
        self._index = index
        self._presence = presence

    async def start(self) -> None:
        await self._sender.hold_shard(self._index)
        if self._presence is not None:
            self._presence.tell_servers(True)

    async def stop(self) -> None:
        if self._presence is not None:
            self._presence.tell_servers(False)
        await self._sender.release_shard(self._index)


def stands_in_for_senders(workers: WorkersConfig) -> bool:
    """Whether this process sends to other servers, or may, standing in: a
    ``federation_sender`` or an ``event_writer``."""
    return workers.has_role("federation_sender") or workers.has_role("event_writer")


def sender_shards(
    senders: list[str],
    instance: str,
    sender: FederationSender,
    presence: PresenceService,
    leases: LeaseStore,
) -> list[tuple[str, Component]]:
    """The leased shares a process that stands in for the senders (``instance``)
    contends for: one per sender, each deferring to its own sender."""
    shards: list[tuple[str, Component]] = []
    for index, owner in enumerate(senders):
        name = f"federation sender {index + 1} of {len(senders)}"
        shard = SenderShard(sender, index, presence if index == 0 else None)
        shards.append((name, Leased(name, shard, leases, instance, defer_to=owner)))
    return shards
