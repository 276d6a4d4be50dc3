"""The errors state resolution raises.

    Exception
     └── StateResError              the inputs cannot be resolved
          ├── StateResTooLarge      a limit of ``StateResLimits`` was exceeded
          └── MissingEventError     an event the algorithm must read is not in event_map

Both are pure: the service layer decides what to do (typically refuse the incoming event or
the remote state and log it). ``AuthError`` from the authorization rules never escapes:
an event that fails its checks during resolution is simply left out, as the spec says.
"""

from __future__ import annotations


class StateResError(Exception):
    """The state sets or the events given cannot be resolved."""


class StateResTooLarge(StateResError):
    """The resolution would consider more events (or state sets) than the limits allow.

    Raised before the expensive steps run, so a pathological input costs little.
    ``limit`` names the limit that was hit and ``value`` is how far the input got.
    """

    def __init__(self, limit: str, maximum: int, value: int) -> None:
        super().__init__(f"state resolution exceeds {limit}={maximum} (reached {value})")
        self.limit = limit
        self.maximum = maximum
        self.value = value


class MissingEventError(StateResError):
    """An event the algorithm must read was not prefetched into ``event_map``.

    Raised for events the resolution cannot do without (the unconflicted state events the
    auth checks consult, the v12 create event), never for conflicted or auth-difference
    events, which, as in Synapse, simply take no part if unknown. It points at a caller that
    prefetched too little, so it is loud rather than silently producing another state.
    """

    def __init__(self, event_id: str, why: str) -> None:
        super().__init__(f"event {event_id} ({why}) is not in event_map")
        self.event_id = event_id
