"""Whether a redaction takes effect (rooms v3+, "Handling redactions"), for v10-v12.

The authorization rules accept any redaction a member may send (see
``test_redaction_needs_no_redact_level``); the server applies it only if (1) its sender
has the redact level or (2) its sender is on the server of the original's sender, and
never across rooms or to the room's create event.
"""

from __future__ import annotations

import pytest

from harness.auth_room import ALICE, BOB, CAROL, DAVE, AuthRoom
from peyvand.events.pdu import Pdu
from peyvand.events.redaction import has_redact_power, redaction_takes_effect
from peyvand.events.room_versions import ROOM_V10, ROOM_V12, RoomVersion


def _redaction(room: AuthRoom, sender: str, target: str) -> Pdu:
    if room.version.redacts_in_content:
        return room.event("m.room.redaction", sender, {"redacts": target})
    return room.event("m.room.redaction", sender, {}, redacts=target)


def _takes_effect(redaction: Pdu, original: Pdu, *, by_power: bool) -> bool:
    return redaction_takes_effect(
        redaction,
        by_power=by_power,
        original_room_id=original.room_id,
        original_sender=original.sender,
        original_type=original.type,
    )


def test_1_redact_level_is_power(room: AuthRoom) -> None:
    room.set_levels({BOB: 50, CAROL: 49})
    assert has_redact_power(ALICE, room.state, room.version)
    assert has_redact_power(BOB, room.state, room.version)  # the default redact level: 50
    assert not has_redact_power(CAROL, room.state, room.version)
    assert not has_redact_power(DAVE, room.state, room.version)  # users_default: 0
    room.set_levels({BOB: 50, CAROL: 49}, redact=40)
    assert has_redact_power(CAROL, room.state, room.version)
    room.set_levels({BOB: 50}, redact=60, users_default=70)
    assert has_redact_power(DAVE, room.state, room.version)
    assert not has_redact_power(BOB, room.state, room.version)


@pytest.mark.parametrize("version", [ROOM_V10, ROOM_V12], ids=["v10", "v12"])
def test_1_without_power_levels_only_the_creator_has_power(version: RoomVersion) -> None:
    room = AuthRoom(version, with_power_levels=False)
    assert has_redact_power(ALICE, room.state, room.version)
    assert not has_redact_power(BOB, room.state, room.version)


@pytest.mark.parametrize("by_power", [False, True])
def test_2_same_server_needs_no_power(room: AuthRoom, by_power: bool) -> None:
    original = room.event("m.room.message", ALICE, {"body": "x"})
    same_server = _redaction(room, DAVE, original.event_id)  # both on a.test
    assert _takes_effect(same_server, original, by_power=by_power)
    other_server = _redaction(room, BOB, original.event_id)
    assert _takes_effect(other_server, original, by_power=by_power) is by_power


def test_never_across_rooms_nor_to_the_create_event(room: AuthRoom) -> None:
    other = AuthRoom(room.version, creator=BOB)
    elsewhere = other.event("m.room.message", ALICE, {"body": "x"})
    redaction = _redaction(room, ALICE, elsewhere.event_id)
    assert elsewhere.room_id != room.room_id
    assert not _takes_effect(redaction, elsewhere, by_power=True)
    create = _redaction(room, ALICE, room.create.event_id)
    assert not _takes_effect(create, room.create, by_power=True)
