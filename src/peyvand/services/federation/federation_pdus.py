"""PDUs as this server hands them to other servers (Server-Server API, "PDUs"): pruned
when redacted here, without ``unsigned``; the stripped state sent with invites and
knocks; the outbound sender's loader of stored events; and the room version another
server names for a PDU it sends or asks us to sign."""

from __future__ import annotations

from collections.abc import Sequence

from peyvand.errors import Errcode, MatrixError
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.redaction import redact
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from peyvand.services.timeline.room_state import STRIPPED_STATE_TYPES, RoomSnapshot, StateService
from peyvand.types import EventID, JsonDict


def federation_pdu(pdu: Pdu, redacted: bool = False) -> JsonDict:
    """The PDU as sent to other servers (pruned when redacted here)."""
    data = dict(pdu.data)
    data.pop("unsigned", None)
    return redact(data, pdu.room_version) if redacted else data


async def stripped_state(state: StateService, snapshot: RoomSnapshot) -> list[JsonDict]:
    """The invite's room state: full PDUs, which are valid stripped state events too
    and let the invited server check the create event (as Synapse expects)."""
    keys: list[StateKey] = [(t, "") for t in STRIPPED_STATE_TYPES]
    events = await state.get_state_events(snapshot.state, keys, as_served=True)
    return [federation_pdu(e) for e in events.values()]


async def load_federation_pdus(
    state: StateService, event_ids: Sequence[str]
) -> dict[str, JsonDict]:
    """Stored events as they are sent to other servers (the sender's PDU loader); one
    purged since it was queued goes as its redacted PDU, so peers keep a whole DAG."""
    events = await state.get_dag_events(EventID(e) for e in event_ids)
    return {
        e: federation_pdu(stored.pdu, stored.redacted_by is not None)
        for e, stored in events.items()
    }


def supported_room_version(identifier: object) -> RoomVersion:
    """The room version another server named (an invite's ``room_version``, a
    ``make_join`` template's); 400 ``M_INCOMPATIBLE_ROOM_VERSION`` if this server does not
    support it."""
    version = KNOWN_ROOM_VERSIONS.get(identifier) if isinstance(identifier, str) else None
    if version is None:
        raise MatrixError(
            Errcode.INCOMPATIBLE_ROOM_VERSION,
            f"Room version {identifier!r} is not supported",
            room_version=str(identifier),
        )
    return version
