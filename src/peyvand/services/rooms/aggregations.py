"""Bundled aggregations: ``unsigned["m.relations"]`` of served events (Client-Server API,
"Aggregations of child events").

For every event of a response at once (a few queries, never one per event):

- ``m.replace`` ("Event replacements", "Server-side aggregation of ``m.replace``"): the
  most recent valid edit (same room, sender and type, no state event, the original no
  edit itself, ``m.new_content`` present unless encrypted), by ``origin_server_ts`` then
  ``event_id``, served whole; the original's content is left as it is (v1.7). Not for a
  redacted original.
- ``m.thread`` ("Threading"): ``latest_event`` (served with its own ``m.replace``),
  ``count`` and ``current_user_participated``, for events that relate to nothing.
- ``m.reference``: ``{"chunk": [{"event_id"}...]}``, the oldest 50
  (``storage.relations.MAX_REFERENCES``; Synapse bundles every one), so a much
  referenced event costs each response that serves it no more than a page.

State events, annotations and edits get none, as in Synapse. Children from users the
reader ignores are left out; the latest thread event and edits must be visible to the
reader (history visibility). What depends on the reader: the ignored users (counts,
latest event, references), ``current_user_participated`` and visibility; the rest is
the same for everyone.

Most events have no children. One query finds which events of a response have any
(shared by the syncs one message wakes, which ask at the same time); only those are
aggregated. An event found to have none (for every reader) is remembered until a child
of it is stored (``on_persisted``), and so is every new local event as it is stored
(nothing can relate to an event before its ID exists), so the syncs a new local message
wakes ask the database nothing about it. Events from other servers are not taken as
childless on arrival: their children may have come first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from peyvand.events.relations import Relation, relation_in
from peyvand.events.serialize import client_event
from peyvand.lru import LRU
from peyvand.services.rooms.visibility import IgnoredBy, VisibilityService
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.models import EventToPersist, StoredEvent
from peyvand.storage.relations import RelationStore
from peyvand.types import EventID, JsonDict, RoomID, ServerName, UserID

# Edits of one original, and newest thread replies of one root, looked at for one that
# the reader may see (and that is valid) before giving up.
_CANDIDATES = 20
_CHILDLESS_CACHE = 50_000
# Relations whose events never get aggregations of their own.
_LEAF_RELATIONS = ("m.annotation", "m.replace")
# The relations that are bundled with their parent.
_BUNDLED_RELATIONS = ("m.replace", "m.thread", "m.reference")


def relation_of(event: StoredEvent) -> Relation | None:
    """The relation of a served event: none for a redacted one (its relation is gone)."""
    return relation_in(event.pdu.content) if event.redacted_by is None else None


def _valid_edit(edit: StoredEvent) -> bool:
    """The checks storage cannot make: the edit carries ``m.new_content`` (an
    encrypted one carries it in its ciphertext, which the server cannot read)."""
    if edit.pdu.type == "m.room.encrypted":
        return True
    return isinstance(edit.pdu.content.get("m.new_content"), Mapping)


@dataclass(frozen=True, slots=True)
class Render:
    """How bundled events are served: in the format of the events they are bundled with."""

    now: int
    include_room_id: bool = True
    federation_format: bool = False

    def __call__(self, event: StoredEvent, relations: JsonDict | None = None) -> JsonDict:
        pdu = event.pdu
        unsigned: JsonDict = {"age": max(0, self.now - pdu.origin_server_ts)}
        if relations:
            unsigned["m.relations"] = relations
        if self.federation_format:
            return {**pdu.data, "event_id": pdu.event_id, "unsigned": unsigned}
        return client_event(pdu, unsigned=unsigned, include_room_id=self.include_room_id)


@dataclass(frozen=True, slots=True)
class _Thread:
    latest: StoredEvent
    count: int
    participated: bool


class BundledAggregations:
    def __init__(
        self,
        store: RelationStore,
        state: StateService,
        visibility: VisibilityService,
        ignored_by: IgnoredBy,
        server_name: ServerName,
    ) -> None:
        self._store = store
        self._local_suffix = f":{server_name}"
        self._state = state
        self._visibility = visibility
        self._ignored_by = ignored_by
        # Events known to have no child to bundle, for any reader.
        self._childless: LRU[EventID, bool] = LRU(_CHILDLESS_CACHE)
        # Moves whenever a child is stored: a "childless" answer read across a move is
        # not remembered (the child may have been committed after it was read).
        self._generation = 0
        # Queries in flight for whether events have children, by event.
        self._probes: dict[EventID, asyncio.Future[set[EventID]]] = {}

    def on_persisted(self, batch: Sequence[EventToPersist]) -> None:
        """Dispatcher listener: a new local event has no child yet; a stored child makes
        its parent worth asking about."""
        for persisted in batch:
            if (
                persisted.pdu.sender.endswith(self._local_suffix)
                and persisted.stream_ordering > 0  # not backfilled
                and not persisted.was_outlier
            ):
                self._childless.put(persisted.pdu.event_id, True)
        for persisted in batch:
            if persisted.relates_to is not None:
                self._childless.pop(persisted.relates_to)
                self._generation += 1

    async def relations(
        self, events: Sequence[StoredEvent], user_id: UserID | None, render: Render
    ) -> dict[EventID, JsonDict]:
        """``m.relations`` of each of ``events`` that has any, as seen by ``user_id``."""
        eligible: dict[EventID, StoredEvent] = {}
        for event in events:
            relation = relation_of(event)
            if event.pdu.is_state() or (
                relation is not None and relation.rel_type in _LEAF_RELATIONS
            ):
                continue
            if self._childless.get(event.pdu.event_id) is None:
                eligible[event.pdu.event_id] = event
        if eligible:
            parents = await self._parents(list(eligible))
            eligible = {e: event for e, event in eligible.items() if e in parents}
        if not eligible:
            return {}
        ignored = await self._ignored_by(user_id) if user_id is not None else frozenset()
        threads = await self._threads(
            [e for e in eligible.values() if relation_of(e) is None], user_id, ignored
        )
        edit_targets = [e for e in eligible.values() if e.redacted_by is None]
        edit_targets += [t.latest for t in threads.values()]
        edits = await self._edits(edit_targets, user_id)
        references = await self._store.references(eligible, ignored)
        out: dict[EventID, JsonDict] = {}
        for event_id in eligible:
            bundle: JsonDict = {}
            if (edit := edits.get(event_id)) is not None:
                bundle["m.replace"] = render(edit)
            if (thread := threads.get(event_id)) is not None:
                latest_edit = edits.get(thread.latest.pdu.event_id)
                bundle["m.thread"] = {
                    "latest_event": render(
                        thread.latest,
                        {"m.replace": render(latest_edit)} if latest_edit is not None else None,
                    ),
                    "count": thread.count,
                    "current_user_participated": thread.participated,
                }
            if references.get(event_id):
                bundle["m.reference"] = {"chunk": [{"event_id": r} for r in references[event_id]]}
            if bundle:
                out[event_id] = bundle
        return out

    async def _parents(self, event_ids: Sequence[EventID]) -> set[EventID]:
        """Those of ``event_ids`` with a child to bundle. Callers asking at the same time
        about the same events (the syncs one message wakes) share one query; the events
        found childless are remembered."""
        shared = {e: self._probes[e] for e in event_ids if e in self._probes}
        mine = [e for e in event_ids if e not in shared]
        parents: set[EventID] = set()
        if mine:
            probe: asyncio.Future[set[EventID]] = asyncio.get_running_loop().create_future()
            for event_id in mine:
                self._probes[event_id] = probe
            generation = self._generation
            try:
                found = await self._store.parents_among(mine, _BUNDLED_RELATIONS)
            except BaseException:
                probe.cancel()
                raise
            finally:
                for event_id in mine:
                    if self._probes.get(event_id) is probe:
                        del self._probes[event_id]
            probe.set_result(found)
            parents |= found
            if generation == self._generation:
                for event_id in mine:
                    if event_id not in found:
                        self._childless.put(event_id, True)
        for event_id, shared_probe in shared.items():
            try:
                found = await asyncio.shield(shared_probe)
            except asyncio.CancelledError:
                if not shared_probe.cancelled():
                    raise
                parents.add(event_id)  # that query failed: look at this one in full
                continue
            if event_id in found:
                parents.add(event_id)
        return parents

    async def _threads(
        self, roots: Sequence[StoredEvent], user_id: UserID | None, ignored: frozenset[UserID]
    ) -> dict[EventID, _Thread]:
        if not roots:
            return {}
        by_id = {e.pdu.event_id: e for e in roots}
        summaries = await self._store.thread_summaries(by_id, user_id, ignored)
        newest = await self._state.get_events(s.latest_event_id for s in summaries.values())
        visible = await self._visible(newest.values(), user_id)
        latest = {
            root: visible[s.latest_event_id]
            for root, s in summaries.items()
            if s.latest_event_id in visible
        }
        hidden = [root for root in summaries if root not in latest]
        if hidden:
            # The newest reply is hidden from this reader: the newest one they may see.
            replies = await self._store.newest_thread_replies(hidden, _CANDIDATES, ignored)
            found = await self._state.get_events(r for ids in replies.values() for r in ids)
            seen = await self._visible(found.values(), user_id)
            for root, ids in replies.items():
                first = next((seen[r] for r in ids if r in seen), None)
                if first is not None:
                    latest[root] = first
        return {
            root: _Thread(
                latest=latest_event,
                count=summaries[root].count,
                participated=summaries[root].participated or by_id[root].pdu.sender == user_id,
            )
            for root, latest_event in latest.items()
        }

    async def _edits(
        self, originals: Sequence[StoredEvent], user_id: UserID | None
    ) -> dict[EventID, StoredEvent]:
        """The newest valid edit of each original that the reader may see."""
        if not originals:
            return {}
        candidates = await self._store.edit_candidates(
            {e.pdu.event_id for e in originals}, _CANDIDATES
        )
        if not candidates:
            return {}
        found = await self._state.get_events(e for ids in candidates.values() for e in ids)
        seen = await self._visible([e for e in found.values() if _valid_edit(e)], user_id)
        chosen: dict[EventID, StoredEvent] = {}
        for original, ids in candidates.items():
            edit = next((seen[e] for e in ids if e in seen), None)
            if edit is not None:
                chosen[original] = edit
        return chosen

    async def _visible(
        self, events: Iterable[StoredEvent], user_id: UserID | None
    ) -> dict[EventID, StoredEvent]:
        """Those of ``events`` that ``user_id`` may see (all of them for no reader)."""
        by_room: dict[RoomID, list[StoredEvent]] = {}
        for event in events:
            if event.redacted_by is None:
                by_room.setdefault(event.pdu.room_id, []).append(event)
        visible: dict[EventID, StoredEvent] = {}
        for room_id, room_events in by_room.items():
            if user_id is not None:
                snapshot = await self._state.get_room(room_id)
                joined = snapshot is not None and snapshot.memberships.get(user_id) == "join"
                room_events = await self._visibility.filter_events(
                    user_id, room_events, currently_joined=joined
                )
            visible.update((e.pdu.event_id, e) for e in room_events)
        return visible
