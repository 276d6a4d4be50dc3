"""The readable HTML transcript of an export: one line per event, oldest first.

Each line shows the time (UTC), the sender and what happened: a message's body, or
``[encrypted message]`` (the server never sees plaintext), ``[image: name]``,
``[file: name]`` (linked to the copy in ``attachments/`` when the export holds one),
``[redacted]``, or a short description of a state change. Everything taken from an event
is escaped with ``html.escape``; the page has no scripts and loads nothing.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from peyvand.types import JsonDict

_STYLE = """
body { font-family: sans-serif; margin: 2em; }
.event { margin: 0.2em 0; white-space: pre-wrap; }
.time { color: #666; font-family: monospace; }
.sender { font-weight: bold; }
.room { color: #666; font-family: monospace; }
.note { color: #666; font-style: italic; }
""".strip()

_FILE_KINDS = {"m.image": "image", "m.file": "file", "m.video": "video", "m.audio": "audio"}


def header(title: str, facts: Mapping[str, str]) -> str:
    """The page up to the first event: its title and a list of facts about the export."""
    rows = "".join(
        f"<tr><th>{html.escape(key)}</th><td>{html.escape(value)}</td></tr>\n"
        for key, value in facts.items()
    )
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>\n{_STYLE}\n</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<table>\n{rows}</table>\n<hr>\n"
    )


FOOTER = "</body>\n</html>\n"


def line(event: JsonDict, links: Mapping[str, str], *, show_room: bool) -> str:
    """One event: ``<div>time sender [room] description</div>``. ``links`` maps the
    ``mxc://`` URIs the export holds to their paths inside it."""
    room = (
        f' <span class="room">{html.escape(str(event.get("room_id", "")))}</span>'
        if show_room
        else ""
    )
    return (
        f'<div class="event" id="{html.escape(str(event["event_id"]))}">'
        f'<span class="time">{_time(event["origin_server_ts"])}</span>{room} '
        f'<span class="sender">{html.escape(str(event["sender"]))}</span> '
        f"{_describe(event, links)}</div>\n"
    )


def _time(ts: Any) -> str:
    try:
        moment = datetime.fromtimestamp(int(ts) / 1000, UTC)
    except (OverflowError, OSError, ValueError, TypeError):
        return html.escape(f"{ts} ms")
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _note(text: str) -> str:
    return f'<span class="note">{html.escape(text)}</span>'


def _describe(event: JsonDict, links: Mapping[str, str]) -> str:
    content = event.get("content")
    if not isinstance(content, dict):
        content = {}
    kind = event.get("type")
    if event.get("redacted"):
        return _note("[redacted]")
    if event.get("encrypted"):
        return _note("[encrypted message]")
    if kind == "m.room.message":
        return _message(content, links)
    if kind == "m.sticker":
        return _attachment("sticker", content, links)
    if "state_key" in event:
        return _state(kind, str(event["state_key"]), str(event["sender"]), content)
    if kind == "m.room.redaction":
        return _note(f"[redacted {event.get('redacts', content.get('redacts', '?'))}]")
    if kind == "m.reaction":
        relates = content.get("m.relates_to")
        if isinstance(relates, dict):
            return _note(f"[reacted {relates.get('key', '')} to {relates.get('event_id', '?')}]")
    return _note(f"[{kind}]")


def _message(content: Mapping[str, Any], links: Mapping[str, str]) -> str:
    msgtype = content.get("msgtype")
    if isinstance(msgtype, str) and msgtype in _FILE_KINDS:
        return _attachment(_FILE_KINDS[msgtype], content, links)
    body = content.get("body")
    if not isinstance(body, str):
        return _note(f"[{msgtype or 'message'} without a body]")
    if msgtype == "m.emote":
        return "* " + html.escape(body)
    return html.escape(body)


def _attachment(kind: str, content: Mapping[str, Any], links: Mapping[str, str]) -> str:
    name = content.get("filename") or content.get("body") or ""
    label = html.escape(f"[{kind}: {name}]")
    url = content.get("url")
    if isinstance(url, str) and url in links:
        return f'<a href="{html.escape(links[url])}">{label}</a>'
    return label


def _state(kind: Any, state_key: str, sender: str, content: Mapping[str, Any]) -> str:
    if kind == "m.room.member":
        membership = content.get("membership")
        own = state_key == sender
        text = {
            "join": "joined the room" if own else f"joined {state_key} to the room",
            "invite": f"invited {state_key}",
            "leave": "left the room" if own else f"removed {state_key}",
            "ban": f"banned {state_key}",
            "knock": "asked to join",
        }.get(str(membership), f"set the membership of {state_key} to {membership}")
        return _note(f"[{text}]")
    if kind == "m.room.create":
        return _note("[created the room]")
    if kind == "m.room.name":
        return _note(f"[named the room: {content.get('name', '')}]")
    if kind == "m.room.topic":
        return _note(f"[set the topic: {content.get('topic', '')}]")
    suffix = f" {state_key}" if state_key else ""
    return _note(f"[{kind}{suffix}]")
