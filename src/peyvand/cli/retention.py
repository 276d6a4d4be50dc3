"""``peyvand retention run|show``: retention from the command line (docs/compliance.md,
"Retention"), through the running server's admin API (``cli/admin_api.py``).

``run`` asks for a purge now (``POST /_peyvand/admin/v1/retention/run``: one room with
``--room``, or every room and the redacted-content purge; ``--now`` evaluates the
policies as of another time); the server records it in the audit log with the token's
owner as the actor. ``show`` reads a room's effective policy
(``GET /_peyvand/admin/v1/rooms/{roomId}/retention``).

Only the standard library is imported: ``peyvand --help`` stays light.
"""

from __future__ import annotations

import argparse
from typing import Any

from peyvand.cli.admin_api import (
    ADMIN_PREFIX,
    TOKEN_VARIABLE,
    AdminAPI,
    add_config_argument,
    add_connection_arguments,
    segment,
)
from peyvand.cli.dates import format_duration, format_ts, parse_date

RUN_TIMEOUT = 600.0
SHOW_TIMEOUT = 60.0


def add_retention_command(commands: Any) -> None:
    """Add ``retention run|show`` to the ``peyvand`` command parser's subparsers."""
    retention = commands.add_parser(
        "retention",
        help="retention: purge expired history now, show a room's policy",
        description="Retention (see docs/compliance.md): run a purge now or show a room's "
        "effective policy. Goes through the running server's admin API with a server admin's "
        f"access token (--token or ${TOKEN_VARIABLE}).",
    )
    subcommands = retention.add_subparsers(
        dest="retention_command", required=True, metavar="COMMAND"
    )
    run = subcommands.add_parser(
        "run",
        help="purge expired history now",
        description="Purge the history older than each room's max_lifetime now, instead of "
        "waiting for the next run: one room with --room, or every room (and the stored "
        "content of events redacted long enough ago). What legal holds cover is kept. "
        "Recorded in the audit log.",
    )
    add_config_argument(run)
    run.add_argument("--room", help="only this room (a room ID)")
    run.add_argument(
        "--now",
        help="evaluate the policies as of this time: an ISO 8601 date (UTC unless an offset "
        "is given: 2024-03-31 or 2024-03-31T18:00:00Z) or milliseconds since the epoch "
        "(default: now)",
    )
    run.add_argument("--reason", help="why (recorded in the audit log)")
    add_connection_arguments(run, timeout=RUN_TIMEOUT)
    run.set_defaults(handler=_run)
    show = subcommands.add_parser(
        "show",
        help="show a room's effective retention policy",
        description="Show a room's effective max_lifetime (after the server's clamping) and "
        "its disappearing-message timer.",
    )
    add_config_argument(show)
    show.add_argument("room_id", metavar="ROOM_ID", help="the room ID, e.g. !abc:example.org")
    add_connection_arguments(show, timeout=SHOW_TIMEOUT)
    show.set_defaults(handler=_show)


def parse_now(text: str) -> int:
    """``--now``: milliseconds since the epoch, given as such or as an ISO 8601 date."""
    if text.isdigit():
        return int(text)
    return parse_date(text, end_of_day=False)


def _run(args: argparse.Namespace) -> None:
    now_ts = None if args.now is None else parse_now(args.now)
    api = AdminAPI.from_args(args)
    body: dict[str, Any] = {}
    for key, value in (("room_id", args.room), ("now_ts", now_ts), ("reason", args.reason)):
        if value is not None:
            body[key] = value
    report = api.post(f"{ADMIN_PREFIX}/retention/run", body)
    print(describe_run(report, room_id=args.room, now_ts=now_ts))


def _show(args: argparse.Namespace) -> None:
    api = AdminAPI.from_args(args)
    policy = api.get(f"{ADMIN_PREFIX}/rooms/{segment(args.room_id)}/retention")
    print(describe_policy(args.room_id, policy))


def describe_run(report: dict[str, Any], *, room_id: str | None, now_ts: int | None) -> str:
    """The admin API's report of a run (``{"rooms", "purged", "redacted_content"}``)."""
    scope = f"room {room_id}" if room_id is not None else "every room"
    when = "as of now" if now_ts is None else f"as of {format_ts(now_ts)}"
    rooms = _int(report.get("rooms"))
    lines = [
        f"retention run over {scope}, {when}",
        f"rooms with a retention policy: {rooms}",
        f"purged: {_counts(report.get('purged'))}",
    ]
    if room_id is not None and rooms == 0:
        lines.append("the room keeps its history forever (no max_lifetime): nothing purged")
    if room_id is None:
        lines.append(
            f"content of long-redacted events deleted: {_counts(report.get('redacted_content'))}"
        )
    return "\n".join(lines)


def describe_policy(room_id: str, policy: dict[str, Any]) -> str:
    """The admin API's ``{"max_lifetime", "disappearing_timer_ms"}`` for ``room_id``."""
    lifetime = policy.get("max_lifetime")
    timer = policy.get("disappearing_timer_ms")
    return "\n".join(
        [
            f"room {room_id}",
            "max_lifetime: "
            + (
                f"{format_duration(lifetime)} ({lifetime} ms): older history is purged"
                if isinstance(lifetime, int)
                else "none: history is kept forever"
            ),
            "disappearing messages: "
            + (
                f"{format_duration(timer)} ({timer} ms) after sending"
                if isinstance(timer, int)
                else "off"
            ),
        ]
    )


def _counts(count: Any) -> str:
    count = count if isinstance(count, dict) else {}
    events, media, held = (_int(count.get(k)) for k in ("events", "media", "held"))
    return (
        f"{_plural(events, 'event')}, {_plural(media, 'media file')}; "
        f"kept under legal hold: {_plural(held, 'event')}"
    )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
