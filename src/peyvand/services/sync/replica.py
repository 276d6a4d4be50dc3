"""The changes of a stream kept in memory only (typing, presence), carried with their data
between the processes of a deployment (issue 21, "Streams across processes").

A ``Replica`` sends a service's changes on one bus channel and hands the other processes'
changes to the service (a message of this process's own, which the bus delivers locally
too, is ignored). A change larger than a bus message (a presence batch of many users, a
status message of 4,096 characters) is cut into consecutive pieces of its JSON text, put
back together by each receiver: the bus keeps one sender's messages in order, and a
piece lost with its connection loses that one change, as a lost message would.

The service applies a change in order of arrival: ``apply`` is called synchronously,
once per change, and should change the service's state before it awaits anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from peyvand.storage.bus import MAX_PAYLOAD_BYTES, Bus

logger = logging.getLogger(__name__)

# Characters of JSON text per piece: at most 4 bytes each once embedded in a piece's JSON
# (a non-ASCII character in UTF-8, or an escaped quote or backslash: 2), under the limit.
PIECE_CHARS = 1_800
# A change whose JSON fits in this many bytes goes in one message (the rest of the limit
# is the envelope's).
WHOLE_BYTES = MAX_PAYLOAD_BYTES - 16

Apply = Callable[[dict[str, Any]], Awaitable[None]]


class Replica:
    def __init__(self, bus: Bus, channel: str, instance: str, apply: Apply) -> None:
        self._bus = bus
        self._channel = channel
        self._instance = instance
        self._apply = apply
        # sender -> the pieces of its change received so far.
        self._pieces: dict[str, list[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        bus.subscribe(channel, self._on_message)

    def publish(self, change: Mapping[str, object]) -> None:
        """Send ``change`` (a JSON object) to the other processes."""
        body = orjson.dumps(change)
        if len(body) <= WHOLE_BYTES:
            self._bus.publish(self._channel, {"m": change})
            return
        text = body.decode()
        count = -(-len(text) // PIECE_CHARS)
        for index in range(count):
            piece = text[index * PIECE_CHARS : (index + 1) * PIECE_CHARS]
            self._bus.publish(self._channel, {"k": [index, count], "d": piece})

    async def stop(self) -> None:
        """Wait for the changes being applied."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_message(self, payload: dict[str, Any], sender: str) -> None:
        if sender == self._instance:
            return  # the bus hands a process its own messages too
        change = payload.get("m")
        if change is None and "k" in payload:
            change = self._piece(payload, sender)
            if change is None:
                return
        if not isinstance(change, dict):
            logger.warning("ignoring a malformed %s message from %s", self._channel, sender)
            return
        task = asyncio.get_running_loop().create_task(self._run(change, sender))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _piece(self, payload: dict[str, Any], sender: str) -> Any:
        """The whole change once its last piece is in, else None (a piece out of order,
        its predecessor lost, drops the change)."""
        try:
            index, count = (int(n) for n in payload["k"])
            text = str(payload["d"])
        except (KeyError, TypeError, ValueError):
            self._pieces.pop(sender, None)
            return None
        pieces = self._pieces.setdefault(sender, [])
        if index == 0:
            pieces.clear()
        elif len(pieces) != index:
            self._pieces.pop(sender, None)
            return None
        pieces.append(text)
        if len(pieces) < count:
            return None
        del self._pieces[sender]
        try:
            return orjson.loads("".join(pieces))
        except orjson.JSONDecodeError:
            return None

    async def _run(self, change: dict[str, Any], sender: str) -> None:
        try:
            await self._apply(change)
        except Exception:
            logger.exception("applying a %s change from %s failed", self._channel, sender)
