"""Dates and durations as the operator commands read and show them.

Dates are ISO 8601 in UTC unless they name an offset (``2024-03-31`` or
``2024-03-31T18:00:00Z``); timestamps are milliseconds since the epoch. Only the standard
library is imported: the commands that go through the admin API stay light.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from peyvand.cli.errors import CommandError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_MS = 86_400_000
_UNITS = (
    ("day", _DAY_MS),
    ("hour", 3_600_000),
    ("minute", 60_000),
    ("second", 1000),
    ("millisecond", 1),
)


def parse_date(text: str, *, end_of_day: bool) -> int:
    """Milliseconds since the epoch of an ISO 8601 date or date and time (UTC unless an
    offset is given); a bare date is the start of that day, or its last millisecond with
    ``end_of_day``. ``CommandError`` if malformed."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        start = _ms(datetime(day.year, day.month, day.day, tzinfo=UTC))
        return start + _DAY_MS - 1 if end_of_day else start
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(
            f"not a date: {text!r} (use 2024-03-31 or 2024-03-31T18:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _ms(moment)


def format_ts(ts: int) -> str:
    """``2024-03-31T23:59:59.999Z`` (milliseconds shown only when there are any)."""
    moment = _EPOCH + timedelta(milliseconds=ts)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if ts % 1000:
        text += f".{ts % 1000:03d}"
    return text + "Z"


def format_duration(ms: int) -> str:
    """``1 day``, ``2 hours 30 minutes``, ``45 seconds``: every non-zero unit, largest
    first (``0 seconds`` for none)."""
    parts = []
    rest = ms
    for name, size in _UNITS:
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count} {name}{'' if count == 1 else 's'}")
    return " ".join(parts) or "0 seconds"


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)
