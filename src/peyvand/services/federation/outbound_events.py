"""Events going out to other servers: local events (and the membership events a server
handed us to relay: send_join, send_leave, send_knock) are queued for every other server
in their rooms through the durable per-destination sender, in the events' own commit
(Server-Server API, "PDUs")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager

from peyvand.federation.sender import FederationSender
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.database import Connection
from peyvand.storage.federation_outbox import FederationOutboxStore, OutboxRow
from peyvand.storage.models import EventToPersist
from peyvand.types import EventID, RoomID, ServerName, server_name_of

TxnWrite = Callable[[Connection], Awaitable[None]]


class OutboundEvents:
    """The event writer's pre-commit hook and after-commit listener for federation."""

    def __init__(
        self,
        server_name: ServerName,
        sender: FederationSender,
        state: StateService,
        outbox: FederationOutboxStore,
        *,
        partial_state_servers: Callable[[RoomID], frozenset[ServerName]] = lambda _: frozenset(),
    ) -> None:
        """``partial_state_servers``: the servers in a room joined with partial state, as
        the resident server named them (``servers_in_room``), until its members are known."""
        self._server_name = server_name
        self._sender = sender
        self._state = state
        self._outbox = outbox
        self._partial_state_servers = partial_state_servers
        # Events accepted from a joining server that we relay to the rest of the room
        # (event ID -> the server that sent it, which does not get it back).
        self._relay: dict[EventID, ServerName] = {}
        self._queued: dict[ServerName, None] = {}

    @contextmanager
    def relaying(self, event_id: EventID, origin: ServerName) -> Iterator[None]:
        """While the block runs, ``event_id`` (from ``origin``) is relayed to the rest of
        its room if it is committed; it is forgotten afterwards either way."""
        self._relay[event_id] = origin
        try:
            yield
        finally:
            self._relay.pop(event_id, None)

    async def prepare_outbound(self, batch: Sequence[EventToPersist]) -> TxnWrite | None:
        """Pre-commit hook: queue rows sending this batch's local events (and relayed
        joins) to every other server in their rooms, in the events' own transaction."""
        rows: list[OutboxRow] = []
        for persisted in batch:
            pdu = persisted.pdu
            origin = server_name_of(pdu.sender)
            # Read, not popped: a failed commit calls the hook again (``relaying`` drops
            # the entry once the event is stored).
            relayed_from = self._relay.get(pdu.event_id)
            if origin != self._server_name and relayed_from is None:
                continue
            destinations = set(self.servers_in_room(pdu.room_id, persisted.joined_servers))
            if pdu.type == "m.room.member" and pdu.state_key:
                destinations.add(server_name_of(pdu.state_key))
            destinations.discard(self._server_name)
            if relayed_from is not None:
                destinations.discard(relayed_from)
            rows.extend(self._sender.rows_for_event(pdu.room_id, pdu.event_id, destinations))
        if not rows:
            return None
        for row in rows:
            self._queued[row.destination] = None

        async def write(txn: Connection) -> None:
            await self._outbox.add_in_txn(txn, rows)

        return write

    def on_persisted(self, batch: Sequence[EventToPersist]) -> None:
        """After the commit: wake the senders of the destinations just queued."""
        if self._queued:
            destinations, self._queued = list(self._queued), {}
            self._sender.notify_new(destinations)

    def servers_in_room(
        self, room_id: RoomID, joined: frozenset[ServerName] | None = None
    ) -> frozenset[ServerName]:
        """The servers with a joined member in the room (``joined``, as an event read
        them when it was built, else from the cached snapshot, which keeps them per
        membership change: no scan of the members per event), and while the room's state
        is partial the servers in it at the join."""
        if joined is None:
            snapshot = self._state.cached_room(room_id)
            joined = snapshot.joined_servers() if snapshot is not None else frozenset()
        partial = self._partial_state_servers(room_id)
        return joined | partial if partial else joined
