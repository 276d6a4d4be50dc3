"""The auth DAG, explored only as far as one resolution needs it.

Spec: "Room Version 2" (and 12), "State resolution", "Definitions": *auth chain*,
*auth difference* and, from v12, *conflicted state subgraph*.

``AuthGraph`` wraps the prefetched ``event_map`` and, optionally, precomputed auth chains
(for example from a storage index). It memoises each event's auth edges and each looked-up
auth chain for the duration of one resolution, and counts the distinct events it touches
so that a pathological DAG fails fast with ``StateResTooLarge``.

Cost: the auth difference is computed from the auth chains of the *conflicted* events; the
unconflicted events are walked only while that can still change the answer (see
``auth_difference``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence, Set

from peyvand.events.pdu import Pdu
from peyvand.events.state_res.errors import StateResTooLarge
from peyvand.types import EventID

AuthChainLookup = Callable[[EventID], Set[EventID]] | Mapping[EventID, Set[EventID]]
"""Precomputed auth chains: ``event ID -> every event reachable by auth_events links``
(the event itself excluded). A mapping may be partial; events it lacks are walked."""


def create_event_id_of(event: Pdu) -> EventID | None:
    """In v12, the ``m.room.create`` event an event implicitly cites (None otherwise).

    "Room Version 12", "Event format": the room ID is the create event's ID with ``!`` for
    ``$``, and the create event is never listed in ``auth_events``; state resolution still
    needs it to authorise events and to find room creators.
    """
    if not event.room_version.room_id_is_create_event_hash or event.type == "m.room.create":
        return None
    room_id = event.get("room_id")
    if not isinstance(room_id, str) or not room_id.startswith("!"):
        return None
    return EventID("$" + room_id[1:])


class AuthGraph:
    """The auth DAG over ``event_map`` for one resolution (not thread-safe, not reusable).

    ``max_events`` bounds the number of distinct events whose auth edges are followed.
    Events missing from ``event_map`` have no known edges: they are leaves unless
    ``auth_chains`` knows their chain.
    """

    def __init__(
        self,
        event_map: Mapping[EventID, Pdu],
        auth_chains: AuthChainLookup | None,
        max_events: int,
    ) -> None:
        self.event_map = event_map
        self._lookup: Callable[[EventID], Set[EventID] | None] | None
        if auth_chains is None:
            self._lookup = None
        elif isinstance(auth_chains, Mapping):
            self._lookup = auth_chains.get
        else:
            self._lookup = auth_chains
        self._max_events = max_events
        self._edges: dict[EventID, tuple[EventID, ...]] = {}
        self._chains: dict[EventID, Set[EventID] | None] = {}

    def auth_ids(self, event_id: EventID) -> tuple[EventID, ...]:
        """The auth events of ``event_id`` (plus, in v12, its implied create event)."""
        edges = self._edges.get(event_id)
        if edges is not None:
            return edges
        if len(self._edges) >= self._max_events:
            raise StateResTooLarge("max_events", self._max_events, len(self._edges) + 1)
        event = self.event_map.get(event_id)
        if event is None:
            edges = ()
        else:
            ids = event.auth_event_ids
            create_id = create_event_id_of(event)
            if create_id is not None and create_id not in ids:
                ids.append(create_id)
            edges = tuple(ids)
        self._edges[event_id] = edges
        return edges

    def known_chain(self, event_id: EventID) -> Set[EventID] | None:
        """The precomputed auth chain of ``event_id``, memoised; None if none was given."""
        if self._lookup is None:
            return None
        if event_id not in self._chains:
            self._chains[event_id] = self._lookup(event_id)
        return self._chains[event_id]

    def closure(self, roots: Iterable[EventID]) -> set[EventID]:
        """``roots`` and every event in their auth chains."""
        seen: set[EventID] = set()
        queue = deque(roots)
        while queue:
            event_id = queue.popleft()
            if event_id in seen:
                continue
            seen.add(event_id)
            chain = self.known_chain(event_id)
            if chain is not None:
                seen.update(chain)
            else:
                queue.extend(self.auth_ids(event_id))
        return seen

    def reached(
        self, roots: Iterable[EventID], targets: Set[EventID], stop: Set[EventID]
    ) -> set[EventID]:
        """The events of ``targets`` in the closure of ``roots``.

        The walk does not enter events in ``stop`` (the caller knows nothing below them is
        a target) and ends as soon as every target was found.
        """
        found: set[EventID] = set()
        seen: set[EventID] = set()
        queue = deque(roots)
        while queue and len(found) < len(targets):
            event_id = queue.popleft()
            if event_id in seen or event_id in stop:
                continue
            seen.add(event_id)
            if event_id in targets:
                found.add(event_id)
            chain = self.known_chain(event_id)
            if chain is not None:
                found.update(targets & chain)
            else:
                queue.extend(self.auth_ids(event_id))
        return found

    def reaches_any(
        self, event_id: EventID, goals: Set[EventID], memo: dict[EventID, bool]
    ) -> bool:
        """Whether some auth path of length >= 1 leads from ``event_id`` into ``goals``.

        ``memo`` is shared between calls with the same ``goals``. Iterative, so deep DAGs do
        not exhaust the stack; a cycle (impossible for genuine, hash-identified events)
        ends the walk instead of looping.
        """
        stack = [event_id]
        entered: set[EventID] = set()
        while stack:
            current = stack[-1]
            if current in memo:
                stack.pop()
                continue
            chain = None if current in self.event_map else self.known_chain(current)
            if chain is not None:
                memo[current] = not goals.isdisjoint(chain)
                stack.pop()
                continue
            edges = self.auth_ids(current)
            if current not in entered:
                entered.add(current)
                pending = [
                    a for a in edges if a not in memo and a not in goals and a not in entered
                ]
                if pending:
                    stack.extend(pending)
                    continue
            memo[current] = any(a in goals or memo.get(a, False) for a in edges)
            stack.pop()
        return memo[event_id]


def auth_difference(
    graph: AuthGraph,
    conflicted_per_set: Sequence[Collection[EventID]],
    unconflicted_ids: Collection[EventID],
    conflicted: Set[EventID],
) -> tuple[set[EventID], set[EventID]]:
    """The auth difference less the conflicted events, and the closure of the conflicted.

    Write C_i for the full auth chain of state set i (taken, as Synapse does, to contain
    the set's own events), U for the unconflicted events, K_i for the conflicted events of
    set i and cl(X) for X plus the auth chains of X. Then C_i = cl(U) | cl(K_i), so the
    auth difference union(C_i) - intersection(C_i) equals
    (union(cl(K_i)) - intersection(cl(K_i))) - cl(U).
    Only the conflicted events' chains are walked in full; cl(U) is walked just far enough
    to strike out the remaining candidates, never below an event that is in every cl(K_i)
    (its whole chain is then common to all sets), and not at all if no candidate is left.

    Returns the difference without the conflicted events (those are in the full conflicted
    set anyway) and union(cl(K_i)), which the v12 conflicted state subgraph reuses.
    """
    closures = [graph.closure(ids) for ids in conflicted_per_set]
    union: set[EventID] = set().union(*closures)
    common: set[EventID] = set.intersection(*closures) if closures else set()
    candidates = union - common - conflicted
    if candidates:
        candidates -= graph.reached(sorted(unconflicted_ids), candidates, common)
    return candidates, union


def conflicted_subgraph(
    graph: AuthGraph, conflicted: Set[EventID], closure_of_conflicted: Iterable[EventID]
) -> set[EventID]:
    """The v12 *conflicted state subgraph*: events on auth paths between conflicted events.

    "Room Version 12", "Definitions": every event reachable from a conflicted event by
    ``auth_events`` links from which a conflicted event is in turn reachable, conflicted
    events included. ``closure_of_conflicted`` is the set of events reachable from the
    conflicted events (``auth_difference`` computes it).
    """
    memo: dict[EventID, bool] = {}
    return {
        event_id
        for event_id in closure_of_conflicted
        if event_id in conflicted or graph.reaches_any(event_id, conflicted, memo)
    }
