"""Checks on the relation of an event a local user sends (Client-Server API, "Forming
relationships between events"), made by event creation for every local event, as
Synapse's ``_validate_event_relation`` makes them, with its statuses and errcodes:

- the parent must be in the same room (400 ``M_UNKNOWN``) and known here, or at least be
  the parent of a relation already stored (400 ``M_UNKNOWN``); a parent ID over 255
  bytes is no event ID (appendices, "Event IDs"), so it is unknown (400, as Synapse
  answers a parent it holds no event of) and is never looked up;
- a ``rel_type`` over 255 bytes (a namespaced identifier: "Common Namespaced Identifier
  Grammar") is accepted, as Synapse accepts it, but not indexed (``events.relations``);
- ``m.annotation``: a string ``key`` of at most 500 characters (400 ``M_UNKNOWN``), not
  sent by the same user with the same event type and key before, unless that one was
  redacted (400 ``M_DUPLICATE_ANNOTATION``: "Event annotations and reactions",
  "Avoiding duplicate annotations");
- ``m.thread``: the root must not itself relate to an event (400 ``M_UNKNOWN``:
  "Threading", "Validation of ``m.thread`` relationships").

Invalid edits (another sender's, of a state event) are accepted, as in Synapse, and
ignored where edits are applied ("Validity of replacement events").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peyvand.errors import Errcode, MatrixError
from peyvand.events.relations import MAX_RELATION_ID_BYTES, declared_relation, relation_in
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.relations import RelationStore
from peyvand.types import RoomID, UserID

MAX_ANNOTATION_KEY = 500


class RelationChecks:
    def __init__(self, state: StateService, store: RelationStore) -> None:
        self._state = state
        self._store = store

    async def check(
        self, room_id: RoomID, sender: UserID, event_type: str, content: Mapping[str, Any]
    ) -> None:
        """Raise the spec's (and Synapse's) error for a relation that may not be sent."""
        relation = declared_relation(content)
        if relation is None:
            return
        if len(relation.parent_id.encode()) > MAX_RELATION_ID_BYTES:
            raise _bad_request("Can't send relation to unknown event")
        parent_id = relation.parent_id
        # Also one held outside the timeline (state received with a join), redacted as
        # served: a redacted event relates to nothing.
        parent = (await self._state.get_pdus([parent_id], as_served=True)).get(parent_id)
        if parent is not None:
            if parent.room_id != room_id:
                raise _bad_request("Relations must be in the same room")
        elif not await self._store.is_relation_target(parent_id):
            raise _bad_request("Can't send relation to unknown event")
        if relation.rel_type == "m.annotation":
            key = relation.key
            if key is None:
                raise _bad_request("Missing aggregation key")
            if len(key) > MAX_ANNOTATION_KEY:
                raise _bad_request("Aggregation key is too long")
            if await self._store.has_annotated(parent_id, event_type, key, sender):
                raise MatrixError(Errcode.DUPLICATE_ANNOTATION, "Can't send same reaction twice")
        elif (
            relation.rel_type == "m.thread"
            and parent is not None
            and relation_in(parent.content) is not None
        ):
            raise _bad_request("Cannot start threads from an event with a relation")


def _bad_request(message: str) -> MatrixError:
    """400 ``M_UNKNOWN``: the spec has no errcode for these ("Threading": "servers
    should use ``M_UNKNOWN`` alongside the HTTP 400 status code"), as Synapse answers."""
    return MatrixError(Errcode.UNKNOWN, message, status=400)
