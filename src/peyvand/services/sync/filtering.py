"""Event filters: parsing, validation and matching (Client-Server API, "Filtering").

Pure: no I/O. ``parse_filter`` validates a sync ``Filter`` (POST /user/{userId}/filter, or
inline in /sync); ``parse_event_filter`` a ``RoomEventFilter`` (the ``filter`` of
/messages and /context). Invalid filters raise ``M_BAD_JSON`` (wrong JSON type) or
``M_INVALID_PARAM`` (a value out of range, e.g. a malformed user or room ID). Unknown keys
are ignored, for forward compatibility.

    Filter                         event_fields, event_format, presence, account_data, room
     └── RoomFilter                rooms, not_rooms, include_leave, and four EventFilters
    EventFilter                    limit, (not_)types, (not_)senders, (not_)rooms, contains_url,
                                   lazy_load_members, include_redundant_members, ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final, TypeVar

from peyvand.errors import Errcode, MatrixError
from peyvand.events.dotted_paths import parse_dotted_path
from peyvand.events.json_input import NotJson, UnacceptableJson, parse_client_json
from peyvand.types import JsonDict, is_valid_user_id

# "EventFilter": "Servers should apply a default value, and impose a maximum value".
# Synapse's defaults: 10, and a timeline limit of at most 100 so initial syncs stay bounded.
DEFAULT_LIMIT: Final = 10
MAX_TIMELINE_LIMIT: Final = 100

EVENT_FORMATS: Final = ("client", "federation")

E = TypeVar("E", bound=Mapping[str, Any])


@lru_cache(maxsize=4096)
def _star_parts(pattern: str) -> tuple[str, ...]:
    return tuple(pattern.split("*"))


def type_matches(pattern: str, event_type: str) -> bool:
    """``types``/``not_types`` matching: ``*`` matches any run of characters, the rest is
    literal and case-sensitive. Linear: each literal part is found at its leftmost place."""
    parts = _star_parts(pattern)
    if len(parts) == 1:
        return event_type == pattern
    first, last = parts[0], parts[-1]
    end = len(event_type) - len(last)
    if end < len(first) or not event_type.startswith(first) or not event_type.endswith(last):
        return False
    pos = len(first)
    for part in parts[1:-1]:
        found = event_type.find(part, pos, end)
        if found < 0:
            return False
        pos = found + len(part)
    return True


@dataclass(frozen=True, slots=True)
class EventFilter:
    """An ``EventFilter`` or ``RoomEventFilter``; an absent list means "no restriction".

    Exclusions win: "A matching type will be excluded even if it is listed in the
    ``types`` filter" (likewise senders and rooms).
    """

    limit: int = DEFAULT_LIMIT
    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: frozenset[str] | None = None
    not_senders: frozenset[str] = frozenset()
    rooms: frozenset[str] | None = None
    not_rooms: frozenset[str] = frozenset()
    contains_url: bool | None = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    unread_thread_notifications: bool = False

    @property
    def matches_all(self) -> bool:
        """Whether ``matches`` keeps every event (no type, sender, room or URL condition),
        as the timeline filter of most syncs does: a scan then reads only what it keeps."""
        return (
            self.types is None
            and not self.not_types
            and self.senders is None
            and not self.not_senders
            and self.rooms is None
            and not self.not_rooms
            and self.contains_url is None
        )

    def matches(self, event: Mapping[str, Any]) -> bool:
        """True if ``event`` (a client-format event, account data or presence) passes.

        Room conditions only apply to events that carry a ``room_id``; events in /sync's
        per-room sections are filtered by room with ``filter_rooms`` instead.
        """
        sender = event.get("sender")
        if not isinstance(sender, str):
            sender = None
        if sender in self.not_senders or (self.senders is not None and sender not in self.senders):
            return False
        room_id = event.get("room_id")
        if isinstance(room_id, str) and not self._room_allowed(room_id):
            return False
        event_type = event.get("type")
        if not isinstance(event_type, str):
            if self.types is not None:
                return False
        elif any(type_matches(p, event_type) for p in self.not_types) or (
            self.types is not None and not any(type_matches(p, event_type) for p in self.types)
        ):
            return False
        if self.contains_url is not None:
            content = event.get("content")
            has_url = isinstance(content, Mapping) and isinstance(content.get("url"), str)
            if has_url is not self.contains_url:
                return False
        return True

    def filter(self, events: Iterable[E]) -> list[E]:
        """The events that ``matches`` keeps, in order."""
        return [event for event in events if self.matches(event)]

    def filter_rooms(self, room_ids: Iterable[str]) -> list[str]:
        """The room IDs this filter's ``rooms``/``not_rooms`` keep, in order."""
        return [room_id for room_id in room_ids if self._room_allowed(room_id)]

    def _room_allowed(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms


@dataclass(frozen=True, slots=True)
class RoomFilter:
    """``RoomFilter``: ``rooms``/``not_rooms`` apply before the four event filters."""

    rooms: frozenset[str] | None = None
    not_rooms: frozenset[str] = frozenset()
    include_leave: bool = False
    ephemeral: EventFilter = field(default_factory=EventFilter)
    state: EventFilter = field(default_factory=EventFilter)
    timeline: EventFilter = field(default_factory=EventFilter)
    account_data: EventFilter = field(default_factory=EventFilter)


@dataclass(frozen=True, slots=True)
class Filter:
    """A sync ``Filter``. ``Filter()`` is the filter of a /sync without one."""

    event_fields: tuple[str, ...] | None = None
    event_format: str = "client"
    presence: EventFilter = field(default_factory=EventFilter)
    account_data: EventFilter = field(default_factory=EventFilter)
    room: RoomFilter = field(default_factory=RoomFilter)

    def filter_rooms(self, room_ids: Iterable[str]) -> list[str]:
        """The room IDs ``room.rooms``/``room.not_rooms`` keep, in order."""
        room = self.room
        return [
            room_id
            for room_id in room_ids
            if room_id not in room.not_rooms and (room.rooms is None or room_id in room.rooms)
        ]

    @property
    def timeline_limit(self) -> int:
        """The timeline ``limit``, capped at ``MAX_TIMELINE_LIMIT``."""
        return min(self.room.timeline.limit, MAX_TIMELINE_LIMIT)

    @property
    def include_leave(self) -> bool:
        return self.room.include_leave

    @property
    def lazy_load_members(self) -> bool:
        """Whether to lazy-load members ("Lazy-loading room members"); read from the state
        filter, as Synapse does."""
        return self.room.state.lazy_load_members

    @property
    def include_redundant_members(self) -> bool:
        """Only meaningful when ``lazy_load_members`` is on."""
        return self.lazy_load_members and self.room.state.include_redundant_members

    @property
    def unread_thread_notifications(self) -> bool:
        """Per-thread notification counts, read from the timeline filter (as Synapse does)."""
        return self.room.timeline.unread_thread_notifications

    def project_event(self, event: JsonDict) -> JsonDict:
        """``event`` reduced to ``event_fields`` (dot-separated paths); all of it if the
        filter names no fields ("A server may include more fields than were requested")."""
        if not self.event_fields:
            return event
        out: JsonDict = {}
        for path in self.event_fields:
            _copy_path(event, out, parse_dotted_path(path))
        return out


# The filter of a /sync without one, built once (it is immutable).
NO_FILTER: Final = Filter()


def _copy_path(source: Mapping[str, Any], target: JsonDict, path: tuple[str, ...]) -> None:
    *parents, leaf = path
    for part in parents:
        value = source.get(part)
        if not isinstance(value, Mapping):
            return
        source = value
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            return
    if leaf in source:
        target[leaf] = source[leaf]


# Parsing ----------------------------------------------------------------------------


class _Reader:
    """Typed access to one filter object; ``where`` names it in error messages."""

    __slots__ = ("data", "where")

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise MatrixError(Errcode.BAD_JSON, f"'{where}' must be an object")
        self.data: JsonDict = data
        self.where = where

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where != "filter" else key

    def get(self, key: str) -> Any:
        # A null value counts as absent.
        return self.data.get(key)

    def boolean(self, key: str) -> bool | None:
        value = self.get(key)
        if value is not None and not isinstance(value, bool):
            raise MatrixError(Errcode.BAD_JSON, f"'{self._name(key)}' must be a boolean")
        return value

    def strings(self, key: str) -> tuple[str, ...] | None:
        value = self.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise MatrixError(Errcode.BAD_JSON, f"'{self._name(key)}' must be an array of strings")
        return tuple(value)

    def user_ids(self, key: str) -> frozenset[str] | None:
        values = self.strings(key)
        if values is None:
            return None
        for user_id in values:
            if not is_valid_user_id(user_id):
                raise MatrixError(
                    Errcode.INVALID_PARAM, f"'{self._name(key)}': invalid user ID {user_id!r}"
                )
        return frozenset(values)

    def room_ids(self, key: str) -> frozenset[str] | None:
        values = self.strings(key)
        if values is None:
            return None
        for room_id in values:
            if not room_id.startswith("!") or len(room_id) < 2:
                raise MatrixError(
                    Errcode.INVALID_PARAM, f"'{self._name(key)}': invalid room ID {room_id!r}"
                )
        return frozenset(values)

    def limit(self) -> int:
        value = self.get("limit")
        if value is None:
            return DEFAULT_LIMIT
        if type(value) is not int:
            raise MatrixError(Errcode.BAD_JSON, f"'{self._name('limit')}' must be an integer")
        # "must be an integer greater than 0"; 0 is tolerated as Synapse and Conduit do,
        # since clients send it to ask for no events.
        if value < 0:
            raise MatrixError(Errcode.INVALID_PARAM, f"'{self._name('limit')}' must be positive")
        return value

    def child(self, key: str) -> _Reader:
        value = self.get(key)
        return _Reader({} if value is None else value, self._name(key))


def _event_filter(reader: _Reader, *, room_event: bool) -> EventFilter:
    common: dict[str, Any] = {
        "limit": reader.limit(),
        "types": reader.strings("types"),
        "not_types": reader.strings("not_types") or (),
        "senders": reader.user_ids("senders"),
        "not_senders": reader.user_ids("not_senders") or frozenset(),
    }
    if not room_event:
        return EventFilter(**common)
    return EventFilter(
        **common,
        rooms=reader.room_ids("rooms"),
        not_rooms=reader.room_ids("not_rooms") or frozenset(),
        contains_url=reader.boolean("contains_url"),
        lazy_load_members=bool(reader.boolean("lazy_load_members")),
        include_redundant_members=bool(reader.boolean("include_redundant_members")),
        unread_thread_notifications=bool(reader.boolean("unread_thread_notifications")),
    )


def parse_event_filter(data: Any) -> EventFilter:
    """A ``RoomEventFilter`` (the ``filter`` of /messages and /context)."""
    return _event_filter(_Reader(data, "filter"), room_event=True)


def parse_filter(data: Any) -> Filter:
    """A sync ``Filter``, validated; ``MatrixError`` if it is not a valid filter."""
    reader = _Reader(data, "filter")
    event_format = reader.get("event_format")
    if event_format is None:
        event_format = "client"
    elif not isinstance(event_format, str):
        raise MatrixError(Errcode.BAD_JSON, "'event_format' must be a string")
    elif event_format not in EVENT_FORMATS:
        raise MatrixError(Errcode.INVALID_PARAM, "'event_format' must be client or federation")
    room = reader.child("room")
    return Filter(
        event_fields=reader.strings("event_fields"),
        event_format=event_format,
        presence=_event_filter(reader.child("presence"), room_event=False),
        account_data=_event_filter(reader.child("account_data"), room_event=False),
        room=RoomFilter(
            rooms=room.room_ids("rooms"),
            not_rooms=room.room_ids("not_rooms") or frozenset(),
            include_leave=bool(room.boolean("include_leave")),
            ephemeral=_event_filter(room.child("ephemeral"), room_event=True),
            state=_event_filter(room.child("state"), room_event=True),
            timeline=_event_filter(room.child("timeline"), room_event=True),
            account_data=_event_filter(room.child("account_data"), room_event=True),
        ),
    )


def _inline_json(value: str) -> Any:
    """A filter given inline in a query, within the limits of any request body."""
    try:
        return parse_client_json(value.encode("utf-8", "surrogatepass"))
    except NotJson:
        raise MatrixError(Errcode.NOT_JSON, "Invalid filter JSON") from None
    except UnacceptableJson as exc:
        raise MatrixError(Errcode.BAD_JSON, str(exc)) from None


def parse_filter_param(value: str) -> Filter | str:
    """The ``filter`` query parameter of /sync: inline JSON (it starts with ``{``, which
    no filter ID does) is parsed into a ``Filter``; anything else is a filter ID, returned
    for the caller to look up."""
    if value.startswith("{"):
        return _parse_inline_filter(value)
    return value


@lru_cache(maxsize=512)
def _parse_inline_filter(value: str) -> Filter:
    """Kept per text: a client sends the same inline filter with every long-poll, and
    parsing it again was a measurable share of each woken sync's CPU (issue 15). A
    ``Filter`` is immutable; an invalid one raises and is not kept."""
    return parse_filter(_inline_json(value))


def parse_event_filter_param(value: str) -> EventFilter:
    """The ``filter`` query parameter of /messages and /context: a JSON RoomEventFilter."""
    return parse_event_filter(_inline_json(value))
