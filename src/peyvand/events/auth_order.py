"""Auth-topological order: events sorted so that each comes after its auth events.

Events received together (a ``send_join`` answer's state and auth chain, the auth events
fetched for a PDU) are checked against their own ``auth_events`` (Server-Server API,
"Checks performed on receipt of a PDU", step 4), so those must be checked first.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

from peyvand.events.pdu import Pdu
from peyvand.types import EventID


def auth_topological_order(events: Mapping[EventID, Pdu]) -> list[Pdu]:
    """``events`` with every event after those of its auth events that are among them
    (Kahn's algorithm; ties by depth, then event ID, for determinism)."""
    children: dict[EventID, list[EventID]] = {e: [] for e in events}
    waiting: dict[EventID, int] = {}
    for event_id, pdu in events.items():
        parents = [a for a in set(pdu.auth_event_ids) if a in events]
        waiting[event_id] = len(parents)
        for parent in parents:
            children[parent].append(event_id)
    # A heap, not a list sorted again after each event: a room's member events all wait
    # on the same few auth events, so thousands become ready at once.
    ready = [(events[e].depth, e) for e, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    ordered: list[Pdu] = []
    while ready:
        _, event_id = heapq.heappop(ready)
        ordered.append(events[event_id])
        for child in children[event_id]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (events[child].depth, child))
    # Auth cycles (impossible for honest servers): what is left goes last.
    ordered += [events[e] for e, n in sorted(waiting.items()) if n > 0]
    return ordered
