"""Test helper for the authorization rules: a small room whose state we can grow.

``AuthRoom(version)`` holds a room's state: its create event, the creator's first join,
a power levels event and a join rules event. Events are built as plain ``Pdu``s (no real
hashes or signatures); ``allows``/``rejects`` run ``check_auth_rules`` against the state.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from peyvand.events.auth import AuthError, check_auth_rules
from peyvand.events.auth.errors import spec_rule
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.room_versions import ROOM_V10, ROOM_V11, ROOM_V12, RoomVersion
from peyvand.types import EventID

ALICE = "@alice:a.test"  # the room creator
BOB = "@bob:b.test"
CAROL = "@carol:c.test"
DAVE = "@dave:a.test"

VERSIONS = [ROOM_V10, ROOM_V11, ROOM_V12]


class AuthRoom:
    """A room's state for auth tests, keyed by ``(type, state_key)``."""

    def __init__(
        self,
        version: RoomVersion,
        *,
        creator: str = ALICE,
        join_rule: str | None = "invite",
        power_levels: dict[str, Any] | None = None,
        with_power_levels: bool = True,
        create_content: dict[str, Any] | None = None,
    ) -> None:
        self.version = version
        self.state: dict[StateKey, Pdu] = {}
        self._ids = itertools.count(1)
        content: dict[str, Any] = {"room_version": version.identifier}
        if not version.implicit_room_creator:
            content["creator"] = creator
        content.update(create_content or {})
        create_data: dict[str, Any] = {
            "type": "m.room.create",
            "state_key": "",
            "sender": creator,
            "content": content,
            "prev_events": [],
            "auth_events": [],
            "depth": 1,
        }
        if version.room_id_is_create_event_hash:
            create_id = EventID("$CreateEventReferenceHashOf" + creator.split(":")[0][1:])
            self.room_id = "!" + create_id[1:]
        else:
            create_id = EventID("$create")
            self.room_id = "!room:" + creator.split(":", 1)[1]
            create_data["room_id"] = self.room_id
        self.create = self.add(Pdu(create_data, create_id, version))
        self.creator = creator
        self.add(self.member(creator, "join", prev_events=[create_id]))
        if with_power_levels:
            if power_levels is None:
                power_levels = (
                    {} if version.creators_have_infinite_power else {"users": {creator: 100}}
                )
            self.add(self.event("m.room.power_levels", creator, power_levels, state_key=""))
        if join_rule is not None:
            self.add(
                self.event("m.room.join_rules", creator, {"join_rule": join_rule}, state_key="")
            )

    def event(
        self,
        event_type: str,
        sender: str,
        content: dict[str, Any] | None = None,
        *,
        state_key: str | None = None,
        prev_events: list[str] | None = None,
        **top_level: Any,
    ) -> Pdu:
        """A new event in this room (not added to the state)."""
        data: dict[str, Any] = {
            "type": event_type,
            "room_id": self.room_id,
            "sender": sender,
            "content": content if content is not None else {},
            "prev_events": prev_events if prev_events is not None else ["$previous"],
            "auth_events": [],
            "depth": 2,
            "origin_server_ts": 0,
            "signatures": {sender.split(":", 1)[1]: {"ed25519:k": "sig"}},
        }
        if state_key is not None:
            data["state_key"] = state_key
        data.update(top_level)
        return Pdu(data, EventID(f"${event_type}-{next(self._ids)}"), self.version)

    def member(
        self,
        target: str,
        membership: str,
        *,
        sender: str | None = None,
        prev_events: list[str] | None = None,
        **content: Any,
    ) -> Pdu:
        """An ``m.room.member`` event for ``target`` (sent by ``target`` unless ``sender``)."""
        return self.event(
            "m.room.member",
            sender or target,
            {"membership": membership, **content},
            state_key=target,
            prev_events=prev_events,
        )

    def add(self, pdu: Pdu) -> Pdu:
        """Put ``pdu`` into the state, unchecked."""
        self.state[pdu.state_tuple] = pdu
        return pdu

    def set_membership(self, user: str, membership: str) -> Pdu:
        return self.add(self.member(user, membership))

    def set_power_levels(self, content: dict[str, Any]) -> Pdu:
        return self.add(self.event("m.room.power_levels", self.creator, content, state_key=""))

    def set_levels(
        self, users: dict[str, int] | None = None, **levels: int | dict[str, int]
    ) -> Pdu:
        """A new power levels event; before v12 it keeps the creator at 100."""
        all_users = dict(users or {})
        if not self.version.creators_have_infinite_power:
            all_users.setdefault(self.creator, 100)
        return self.set_power_levels({**levels, "users": all_users})

    def set_join_rule(self, join_rule: str) -> Pdu:
        return self.add(
            self.event("m.room.join_rules", self.creator, {"join_rule": join_rule}, state_key="")
        )

    def rule(self, v12_rule: str) -> str:
        return spec_rule(self.version, v12_rule)

    def allows(self, pdu: Pdu, **kwargs: Any) -> None:
        check_auth_rules(pdu, self.state, **kwargs)

    def rejects(self, pdu: Pdu, v12_rule: str, **kwargs: Any) -> AuthError:
        """Assert ``pdu`` fails step ``v12_rule`` (given in v12 numbering)."""
        with pytest.raises(AuthError) as info:
            check_auth_rules(pdu, self.state, **kwargs)
        assert info.value.rule == self.rule(v12_rule), str(info.value)
        return info.value
