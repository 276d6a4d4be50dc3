"""Auth-topological order (events/auth_order.py): every event after its auth events."""

from __future__ import annotations

from peyvand.events.auth_order import auth_topological_order
from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import ROOM_V11
from peyvand.types import EventID


def _pdu(event_id: str, depth: int, auth: list[str]) -> Pdu:
    data = {"type": "m.room.message", "depth": depth, "auth_events": auth}
    return Pdu(data, EventID(event_id), ROOM_V11)


def _order(*pdus: Pdu) -> list[str]:
    return [p.event_id for p in auth_topological_order({p.event_id: p for p in pdus})]


def test_auth_events_come_first_whatever_the_depth() -> None:
    # The create event is listed last and has the greatest depth: it still goes first.
    create = _pdu("$create", 9, [])
    member = _pdu("$member", 2, ["$create"])
    power = _pdu("$power", 1, ["$create", "$member"])
    assert _order(power, member, create) == ["$create", "$member", "$power"]


def test_ties_by_depth_then_event_id() -> None:
    create = _pdu("$create", 1, [])
    b = _pdu("$b", 2, ["$create"])
    a = _pdu("$a", 2, ["$create"])
    shallow = _pdu("$z", 1, ["$create"])
    assert _order(b, a, shallow, create) == ["$create", "$z", "$a", "$b"]


def test_auth_events_not_given_are_ignored() -> None:
    assert _order(_pdu("$b", 5, ["$elsewhere"]), _pdu("$a", 6, [])) == ["$b", "$a"]


def test_a_cycle_goes_last() -> None:
    create = _pdu("$create", 1, [])
    x = _pdu("$x", 2, ["$y"])
    y = _pdu("$y", 2, ["$x"])
    assert _order(y, x, create) == ["$create", "$x", "$y"]
