"""State resolution for room version 1 (v1), 2-11 (v2) and 12 (v2.1), as pure functions.

Spec: "Room Version 1", "Room Version 2" and "Room Version 12", "State resolution".
No I/O: the async layer prefetches the events into ``event_map`` (and may pass
precomputed auth chains), then calls ``resolve_state``, in an executor for big rooms.

- ``resolve_state``: merge state sets into one state map.
- ``StateResLimits``: the bounds past which it refuses (``StateResTooLarge``).
- ``split_state``: the unconflicted state map and the conflicted keys.
"""

from peyvand.events.state_res.errors import MissingEventError, StateResError, StateResTooLarge
from peyvand.events.state_res.graph import AuthChainLookup
from peyvand.events.state_res.resolve import (
    DEFAULT_LIMITS,
    StateMap,
    StateResLimits,
    resolve_state,
    split_state,
)

__all__ = [
    "DEFAULT_LIMITS",
    "AuthChainLookup",
    "MissingEventError",
    "StateMap",
    "StateResError",
    "StateResLimits",
    "StateResTooLarge",
    "resolve_state",
    "split_state",
]
