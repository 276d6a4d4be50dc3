"""Which state a room's ``required_state`` selects (MSC4186, "Room configuration"):
``[type, state_key]`` pairs where ``*`` matches any type or key, the key ``$ME`` is the
requesting user, and ``["m.room.member", "$LAZY"]`` the members of the timeline's
senders (the heroes' members come with ``heroes``), as Synapse's
``_required_state_changes`` reads them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from peyvand.events.pdu import StateKey
from peyvand.services.sync.sliding.request import LAZY, ME, WILDCARD, StatePair
from peyvand.types import EventID, UserID

MEMBER = "m.room.member"


def select(
    required: Collection[StatePair],
    state: Mapping[StateKey, EventID],
    user_id: UserID,
    lazy_members: Collection[str],
) -> dict[StateKey, EventID]:
    """The entries of ``state`` that ``required`` selects."""
    exact: set[StateKey] = set()
    any_key: set[str] = set()
    any_type: set[str] = set()
    for event_type, state_key in required:
        key = user_id if state_key == ME else state_key
        if event_type == WILDCARD and key == WILDCARD:
            return dict(state)
        if key == LAZY:
            if event_type == MEMBER:
                exact.update((MEMBER, member) for member in lazy_members)
        elif key == WILDCARD:
            any_key.add(event_type)
        elif event_type == WILDCARD:
            any_type.add(key)
        else:
            exact.add((event_type, key))
    chosen = {k: v for k in exact if (v := state.get(k)) is not None}
    if any_key or any_type:
        chosen.update((k, v) for k, v in state.items() if k[0] in any_key or k[1] in any_type)
    return chosen
