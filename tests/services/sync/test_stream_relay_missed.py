"""What a deployment's process missed of another's stream messages (issue 21): a
to-device message written by the writer whose relay message a reader never got was
taken for absent by the reader's sync, and its acknowledgement deleted it unread."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peyvand.services.sync.stream_relay import StreamRelay
from peyvand.services.sync.streams import Stream
from peyvand.storage.bus import ReconnectHook, SendLostHook, Subscriber
from services.e2ee.test_to_device_device_lists import (
    BOB,
    CAROL,
    DEVICE,
    FakeInbox,
    send,
    to_device_service,
)


class FakeBus:
    """The reader's bus: the test hands it the writer's messages it gets (or not)."""

    def __init__(self) -> None:
        self.subscribers: list[Subscriber] = []
        self.reconnect_hooks: list[ReconnectHook] = []

    def publish(self, channel: str, payload: Mapping[str, object]) -> None:
        pass

    def subscribe(self, channel: str, callback: Subscriber) -> None:
        self.subscribers.append(callback)

    def on_reconnect(self, hook: ReconnectHook) -> None:
        self.reconnect_hooks.append(hook)

    def on_send_lost(self, hook: SendLostHook) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def from_writer(self, payload: dict[str, Any]) -> None:
        for callback in self.subscribers:
            callback(payload, "writer")


async def _reader(inbox: FakeInbox) -> tuple[Any, Any, FakeBus, StreamRelay]:
    reader, notifier = await to_device_service(inbox)
    bus = FakeBus()
    relay = StreamRelay(bus, notifier, "reader", reread_seconds=3600)
    relay.on_refresh(Stream.TO_DEVICE, reader.written_elsewhere)
    relay.track(Stream.TO_DEVICE, reader.stored_position)
    return reader, notifier, bus, relay


async def test_a_message_after_a_missed_one_reads_every_inbox_again() -> None:
    inbox = FakeInbox()
    writer, _ = await to_device_service(inbox)
    reader, notifier, bus, relay = await _reader(inbox)
    await relay.start()
    try:
        await send(writer, "t1", 1)  # for BOB at 1: its relay message is lost
        inbox.position = 2  # then one for CAROL at 2, relayed
        inbox.rows.append((CAROL, "CAROLDEV", 2, {"m": {}}))
        bus.from_writer({"s": "to_device", "p": 2, "u": [CAROL]})
        now = notifier.current_token.get(Stream.TO_DEVICE)
        assert now == 2
        messages, _ = await reader.for_sync(BOB, DEVICE, 0, now)
        assert len(messages) == 1
        await reader.acknowledge(BOB, DEVICE, 0)
        assert [row[2] for row in inbox.rows if row[0] == BOB] == [1]
    finally:
        await relay.stop()


async def test_a_missed_last_message_is_found_in_the_stored_position() -> None:
    inbox = FakeInbox()
    writer, _ = await to_device_service(inbox)
    reader, notifier, bus, relay = await _reader(inbox)
    await relay.start()
    try:
        await send(writer, "t1", 1)  # its relay message lost, and nothing after it
        await relay.reread()  # maybe this process's own write, not yet advanced
        assert notifier.current_token.get(Stream.TO_DEVICE) == 0
        await relay.reread()  # still beyond a second later: missed
        assert notifier.current_token.get(Stream.TO_DEVICE) == 1
        messages, _ = await reader.for_sync(BOB, DEVICE, 0, 1)
        assert len(messages) == 1
        await send(writer, "t2", 2)  # lost too; the bus reconnects: read at once
        for hook in bus.reconnect_hooks:
            await hook()
        assert notifier.current_token.get(Stream.TO_DEVICE) == 2
    finally:
        await relay.stop()


async def test_written_before_the_relay_started_is_found_soon_after() -> None:
    inbox = FakeInbox()
    writer, _ = await to_device_service(inbox)
    reader, notifier, _bus, relay = await _reader(inbox)  # read position 0
    await send(writer, "t1", 1)  # before the reader's bus listened
    await relay.start()
    try:
        await relay.reread()  # beyond at start and a second later: missed
        assert notifier.current_token.get(Stream.TO_DEVICE) == 1
        messages, _ = await reader.for_sync(BOB, DEVICE, 0, 1)
        assert len(messages) == 1
    finally:
        await relay.stop()


async def test_a_process_becoming_the_writer_finds_what_the_last_one_left_unannounced() -> None:
    """The primary event writer dies with its last message stored but never relayed; the
    process taking the role over (``wiring.primary``: the relay's ``catch_up``, then the
    stream's ``resume``) reads every inbox again for it, and writes above it."""
    inbox = FakeInbox()
    writer, _ = await to_device_service(inbox)
    taker, notifier, _bus, relay = await _reader(inbox)
    await relay.start()
    try:
        await send(writer, "t1", 1)  # its relay message never sent: the writer died
        await relay.catch_up()
        await taker.resume()
        assert notifier.current_token.get(Stream.TO_DEVICE) == 1
        messages, _ = await taker.for_sync(BOB, DEVICE, 0, 1)
        assert len(messages) == 1
        await send(taker, "t2", 2)
        assert notifier.current_token.get(Stream.TO_DEVICE) == 2
        assert sorted(row[2] for row in inbox.rows if row[0] == BOB) == [1, 2]
    finally:
        await relay.stop()
