"""Received PDUs handed to their room's event writer (issue 21): split by the writer of
each room, posted to the others, a failure of any making the whole transaction a 503."""

from __future__ import annotations

from typing import Any

import pytest

from peyvand.errors import Errcode, MatrixError
from peyvand.services.federation.forwarded_pdus import (
    PDUS_PATH,
    PDUS_SECONDS,
    ForwardedPdus,
    forwarded_body,
)
from peyvand.services.timeline.forwarding import ForwardedWrites, StreamWaiter
from peyvand.services.timeline.room_owners import RoomOwners, shard_characters
from peyvand.storage.room_writers import Holding
from peyvand.types import JsonDict, ServerName

ORIGIN = ServerName("remote.example")


class FakeLink:
    """A writer's internal API: records the batches, answers each PDU as accepted."""

    def __init__(self, fail: bool = False) -> None:
        self.posted: list[tuple[str, JsonDict]] = []
        self.fail = fail

    async def post(self, path: str, body: JsonDict, *, within: float | None = None) -> JsonDict:
        assert within == PDUS_SECONDS
        self.posted.append((path, body))
        if self.fail:
            raise MatrixError(Errcode.UNKNOWN, "the writer is down", status=503)
        return {"pdus": {pdu["event_id"]: {} for pdu in body["pdus"]}}


def room_of(writer_index: int, n: int) -> str:
    """A room ID whose rooms' writer is the ``writer_index``th of two."""
    return f"!{shard_characters(writer_index, 2)[0]}room{n}:remote.example"


def pdu(room_id: str, n: int) -> dict[str, Any]:
    return {"room_id": room_id, "event_id": f"$e{n}"}


def forwarding(links: dict[str, FakeLink], instance: str) -> tuple[ForwardedPdus, RoomOwners]:
    owners = RoomOwners(("w1", "w2"))
    writes = ForwardedWrites(links, owners, StreamWaiter(lambda: 0))
    return ForwardedPdus(writes, owners, instance), owners


async def test_each_writer_gets_the_pdus_of_its_rooms() -> None:
    links = {"w2": FakeLink()}
    forwarded, owners = forwarding(links, "w1")
    raws = [pdu(room_of(0, 1), 1), pdu(room_of(1, 2), 2), "not a pdu", pdu(room_of(1, 3), 3)]
    here, elsewhere = forwarded.split(raws, forwarded=False)
    assert here == [raws[0], "not a pdu"]
    assert elsewhere == {"w2": [raws[1], raws[3]]}
    assert await forwarded.forward(ORIGIN, elsewhere) == {"$e2": {}, "$e3": {}}
    assert links["w2"].posted == [(PDUS_PATH, {"origin": ORIGIN, "pdus": [raws[1], raws[3]]})]
    assert forwarded_body(links["w2"].posted[0][1]) == (ORIGIN, [raws[1], raws[3]])
    # w2's rooms taken over by w1: stored here, and a batch forwarded here for w1's
    # rooms by a process that still thought w2 wrote them is fine.
    owners.update({"w2": Holding("w1", 1)})
    assert forwarded.split(raws, forwarded=True) == (raws, {})


async def test_a_writer_that_fails_or_no_longer_writes_the_room_makes_a_503() -> None:
    links = {"w1": FakeLink(), "w2": FakeLink(fail=True)}
    forwarded, _ = forwarding(links, "reader")
    raws = [pdu(room_of(0, 1), 1), pdu(room_of(1, 2), 2)]
    here, elsewhere = forwarded.split(raws, forwarded=False)
    assert here == [] and set(elsewhere) == {"w1", "w2"}
    with pytest.raises(MatrixError) as failed:
        await forwarded.forward(ORIGIN, elsewhere)
    assert failed.value.status == 503
    on_writer, _ = forwarding({}, "w1")
    with pytest.raises(MatrixError) as moved:
        on_writer.split([raws[1]], forwarded=True)
    assert moved.value.status == 503
    with pytest.raises(MatrixError):
        forwarded_body({"origin": 1, "pdus": []})
