"""The digest email: what a user missed, grouped by room, in plain text and HTML (every
piece of event content escaped), with the unsubscribe link in the body and in the
``List-Unsubscribe`` headers (RFC 2369; one-click, RFC 8058)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from peyvand.types import RoomID

# Characters of a message body shown in the digest.
_BODY_CHARS = 500


@dataclass(frozen=True, slots=True)
class MissedMessage:
    room_id: RoomID
    room_name: str
    sender_name: str
    # What the event says: its body, or a short description of it.
    text: str
    ts: int


@dataclass(frozen=True, slots=True)
class Digest:
    to: str
    from_address: str
    app_name: str
    messages: Sequence[MissedMessage]
    unsubscribe_link: str


def build_message(digest: Digest) -> EmailMessage:
    """The email for ``digest`` (at least one message)."""
    rooms: dict[RoomID, list[MissedMessage]] = {}
    for missed in digest.messages:
        rooms.setdefault(missed.room_id, []).append(missed)
    email = EmailMessage()
    email["From"] = digest.from_address
    email["To"] = digest.to
    email["Subject"] = _subject(digest, rooms)
    email["Date"] = format_datetime(datetime.now(UTC))
    email["Message-ID"] = make_msgid()
    email["List-Unsubscribe"] = f"<{digest.unsubscribe_link}>"
    email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    email.set_content(_plain_text(digest, rooms))
    email.add_alternative(_html(digest, rooms), subtype="html")
    return email


def _subject(digest: Digest, rooms: dict[RoomID, list[MissedMessage]]) -> str:
    count = len(digest.messages)
    noun = "message" if count == 1 else "messages"
    where = next(iter(rooms.values()))[0].room_name if len(rooms) == 1 else f"{len(rooms)} rooms"
    # A header holds no line breaks, whatever a room's name holds.
    return " ".join(f"[{digest.app_name}] {count} unread {noun} in {where}".split())


def _clip(text: str) -> str:
    return text if len(text) <= _BODY_CHARS else text[: _BODY_CHARS - 1] + "…"


def _plain_text(digest: Digest, rooms: dict[RoomID, list[MissedMessage]]) -> str:
    lines = [f"You have {len(digest.messages)} unread messages on {digest.app_name}.", ""]
    for messages in rooms.values():
        lines.append(f"{messages[0].room_name}:")
        lines.extend(f"  {m.sender_name}: {_clip(m.text)}" for m in messages)
        lines.append("")
    lines.append(f"To stop these emails, open: {digest.unsubscribe_link}")
    return "\n".join(lines) + "\n"


def _html(digest: Digest, rooms: dict[RoomID, list[MissedMessage]]) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html><html><body>",
        f"<p>You have {len(digest.messages)} unread messages on {e(digest.app_name)}.</p>",
    ]
    for messages in rooms.values():
        parts.append(f"<h3>{e(messages[0].room_name)}</h3><ul>")
        parts.extend(f"<li><b>{e(m.sender_name)}</b>: {e(_clip(m.text))}</li>" for m in messages)
        parts.append("</ul>")
    parts.append(
        f'<p><a href="{e(digest.unsubscribe_link)}">Unsubscribe from these emails</a></p>'
        "</body></html>"
    )
    return "".join(parts)
