"""The sync stream token: one position per stream (DESIGN.md, "Sync").

Serialised as ``s`` and the positions joined by ``_``, in this order: events, typing,
receipts, account_data, to_device, device_lists, presence, partial_state. Clients treat it
as opaque; a token from before a stream was added parses, that stream at 0. Pagination
tokens for /messages are ``t<events>``-style event positions (see ``services.messages``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from peyvand.errors import Errcode, MatrixError
from peyvand.lru import LRU

# Positions are stored as 64-bit integers (SQLite INTEGER, PostgreSQL BIGINT).
MAX_POSITION = 2**63 - 1
# Parsed tokens kept (see ``_parsed``).
_PARSED = 1024


def parse_position_number(text: str) -> int:
    """One position of a token: ASCII digits within the 64-bit storage range, else
    ``ValueError`` (so a forged token never reaches the database as an overflow)."""
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > MAX_POSITION:
        raise ValueError(text)
    return int(text)


class Stream(StrEnum):
    EVENTS = "events"
    TYPING = "typing"
    RECEIPTS = "receipts"
    ACCOUNT_DATA = "account_data"
    TO_DEVICE = "to_device"
    DEVICE_LISTS = "device_lists"
    PRESENCE = "presence"
    # Rooms whose partial state became complete (Synapse's un-partial-stated rooms).
    PARTIAL_STATE = "partial_state"


@dataclass(frozen=True, slots=True)
class StreamToken:
    events: int = 0
    typing: int = 0
    receipts: int = 0
    account_data: int = 0
    to_device: int = 0
    device_lists: int = 0
    presence: int = 0
    partial_state: int = 0

    def positions(self) -> tuple[int, ...]:
        """The positions in token order (that of ``Stream``)."""
        return (
            self.events,
            self.typing,
            self.receipts,
            self.account_data,
            self.to_device,
            self.device_lists,
            self.presence,
            self.partial_state,
        )

    def serialize(self) -> str:
        """The token as clients get it. The last one serialised is kept: the syncs one
        commit wakes answer with the same token (issue 15, "hot room")."""
        global _last_serialized
        token, text = _last_serialized
        if token is not self:
            text = "s" + "_".join(map(str, self.positions()))
            _last_serialized = (self, text)
        return text

    @classmethod
    def parse(cls, token: str) -> StreamToken:
        """Parse a token from a client; M_INVALID_PARAM if it is not one of ours."""
        parsed = _parsed.get(token)
        if parsed is not None:
            return parsed
        try:
            if not token.startswith("s"):
                raise ValueError(token)
            parts = [parse_position_number(p) for p in token[1:].split("_")]
            if len(parts) > len(_ORDER):
                raise ValueError(token)
            parsed = cls(*parts)
        except ValueError:
            raise MatrixError(Errcode.INVALID_PARAM, f"Invalid stream token: {token!r}") from None
        _parsed.put(token, parsed)
        return parsed

    def get(self, stream: Stream) -> int:
        value: int = getattr(self, stream.value)
        return value

    def advanced(self, stream: Stream, position: int) -> StreamToken:
        """This token with ``stream`` at ``position``. Built directly: every commit and
        every woken sync makes one, and ``dataclasses.replace`` costs several times as
        much (issue 15, "hot room"); this token itself when ``stream`` is there already,
        so the syncs one commit wakes share their next token and its serialisation."""
        if self.get(stream) == position:
            return self
        positions = list(self.positions())
        positions[_ORDER[stream]] = position
        return StreamToken(*positions)

    def is_after(self, other: StreamToken) -> bool:
        """True if any stream of ``self`` is ahead of ``other``."""
        return any(a > b for a, b in zip(self.positions(), other.positions(), strict=True))


# Each stream's place in a token.
_ORDER: dict[Stream, int] = {stream: at for at, stream in enumerate(Stream)}

# The token serialised last, and its text.
_last_serialized: tuple[StreamToken, str] = (StreamToken(), "s0_0_0_0_0_0_0_0")

# Tokens parsed lately, by their text (each long-poll parses the one it was handed;
# tokens are immutable). Bounded: about 200 bytes an entry.
_parsed: LRU[str, StreamToken] = LRU(_PARSED)
