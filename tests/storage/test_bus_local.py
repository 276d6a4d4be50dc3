"""The single-process bus (``storage.bus.LocalBus``, issue 21): the process's own
subscribers get its messages in order, with the sender's name; the limits that
``PostgresBus`` has (channel names, JSON, 7,900 bytes) are enforced here too."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from peyvand.storage.bus import MAX_PAYLOAD_BYTES, Bus, LocalBus, PayloadTooLarge


def _payload_of_size(size: int) -> dict[str, str]:
    """An object whose compact JSON is ``size`` bytes: ``{"x":"…"}`` is 8 + len(value)."""
    return {"x": "a" * (size - 8)}


async def test_messages_reach_own_subscribers_in_order() -> None:
    bus: Bus = LocalBus("main")
    got: list[tuple[Any, str]] = []
    other: list[Any] = []
    bus.subscribe("positions", lambda payload, sender: got.append((payload["p"], sender)))
    bus.subscribe("invalidations", lambda payload, _sender: other.append(payload))
    await bus.start()
    for position in range(50):
        bus.publish("positions", {"s": "events", "p": position})
    bus.publish("nobody_listens", {"p": 1})
    assert got == []  # delivered on a later turn of the loop, not inside publish
    await asyncio.sleep(0)
    assert got == [(position, "main") for position in range(50)]
    assert other == []
    await bus.stop()
    with pytest.raises(RuntimeError):
        bus.publish("positions", {"p": 51})


async def test_subscribers_see_decoded_json_and_survive_a_failing_one() -> None:
    bus = LocalBus("w1")
    got: list[Any] = []

    def failing(_payload: Any, _sender: str) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe("caches", failing)
    bus.subscribe("caches", lambda payload, _sender: got.append(payload))
    bus.publish("caches", {"keys": ("a", "b"), "n": None})
    await asyncio.sleep(0)
    assert got == [{"keys": ["a", "b"], "n": None}]


async def test_limits() -> None:
    bus = LocalBus()
    got: list[Any] = []
    bus.subscribe("big", lambda payload, _sender: got.append(payload))
    bus.publish("big", _payload_of_size(MAX_PAYLOAD_BYTES))
    with pytest.raises(PayloadTooLarge, match="7901 bytes"):
        bus.publish("big", _payload_of_size(MAX_PAYLOAD_BYTES + 1))
    with pytest.raises(TypeError):
        bus.publish("big", {"x": object()})
    for channel in ("", "Upper", "with space", "semi;colon", "1st", "x" * 64):
        with pytest.raises(ValueError, match="not a lower-case identifier"):
            bus.publish(channel, {})
        with pytest.raises(ValueError, match="not a lower-case identifier"):
            bus.subscribe(channel, lambda _payload, _sender: None)
    await asyncio.sleep(0)
    assert got == [_payload_of_size(MAX_PAYLOAD_BYTES)]
