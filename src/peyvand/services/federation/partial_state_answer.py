"""What this server, resident in a room, answers a ``send_join`` with ``omit_members``
(Server-Server API, "PUT /_matrix/federation/v2/send_join", ``omit_members``;
MSC3706): the state before the join without member events, except the joining user's own
and, in a room with neither ``m.room.name`` nor ``m.room.canonical_alias``, those of the
members who would be its ``m.heroes`` (Client-Server API, "Calculating the display name
for a room"), as Synapse selects them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from peyvand.events.pdu import Pdu, StateKey
from peyvand.services.federation.serving import FederationReads
from peyvand.services.timeline.room_state import StateService
from peyvand.types import EventID, ServerName, UserID, server_name_of

_NAMING: Final = (("m.room.name", ""), ("m.room.canonical_alias", ""))
_MAX_HEROES: Final = 5


def partial_join_state(
    state_before: Mapping[StateKey, EventID],
    memberships: Mapping[UserID, str],
    joiner: UserID,
) -> list[EventID]:
    """The IDs of the state to answer with (``memberships``: the room's current ones)."""
    kept = [e for k, e in state_before.items() if k[0] != "m.room.member"]
    own = state_before.get(("m.room.member", joiner))
    if own is not None:
        kept.append(own)
    if not any(key in state_before for key in _NAMING):
        kept += [
            state_before[("m.room.member", u)] for u in _heroes(state_before, memberships, joiner)
        ]
    return kept


def servers_before_join(memberships: Mapping[UserID, str], joiner: UserID) -> list[ServerName]:
    """``servers_in_room``: the servers with a joined member other than the joining user."""
    return sorted(
        {server_name_of(u) for u, m in memberships.items() if m == "join" and u != joiner}
    )


def _heroes(
    state_before: Mapping[StateKey, EventID], memberships: Mapping[UserID, str], joiner: UserID
) -> list[UserID]:
    members = sorted(
        UserID(k[1]) for k in state_before if k[0] == "m.room.member" and k[1] != joiner
    )
    present = [u for u in members if memberships.get(u) in ("join", "invite")]
    return (present or members)[:_MAX_HEROES]


async def partial_state_answer(
    reads: FederationReads, state: StateService, join: Pdu, memberships: Mapping[UserID, str]
) -> tuple[dict[EventID, Pdu], dict[EventID, Pdu]]:
    """The state before the accepted ``join`` as ``partial_join_state`` selects it, and
    its auth chain without the events already in it (as the spec allows), as served."""
    before = await reads.state_before(join.room_id, join.event_id)
    kept = partial_join_state(before, memberships, UserID(join.state_key or join.sender))
    events = await state.get_pdus(kept, as_served=True)
    chain = await reads.auth_chain(a for p in events.values() for a in p.auth_event_ids)
    return events, {e: p for e, p in chain.items() if e not in events}
