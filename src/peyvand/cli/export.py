"""``peyvand export``: compliance and personal data exports (docs/compliance.md).

- ``export room --room ROOM``: a room's events in a time range, with attachments;
- ``export user --user USER``: every event a user sent in a time range, in any room;
- ``export personal --user USER``: a local user's own data (GDPR);
- ``export verify PATH``: re-check every file of an export against its manifest.

The exports read over a database connection of their own; the server may be running.
Like ``register-user``, they first bring the schema up to date. Each export is recorded in
the audit log. Times are dates (``2024-12-31``: ``--until`` takes in that whole day, UTC),
ISO 8601 times (``2024-12-31T18:00:00Z``; no zone means UTC) or milliseconds since the
epoch; the range includes both ends, ``since <= origin_server_ts <= until``.

Only the standard library is imported at the top: the server's modules are loaded by the
commands that run, so ``peyvand --help`` stays light.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from peyvand.cli.errors import CommandError

if TYPE_CHECKING:
    from peyvand.compliance.export import ExportResult
    from peyvand.config.model import Config

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def add_export_command(commands: Any) -> None:
    """Add ``export`` and its subcommands to the ``peyvand`` command parser's
    ``add_subparsers()`` result."""
    export = commands.add_parser(
        "export",
        help="compliance (eDiscovery) and personal data exports",
        description="Export a room's or a user's messages, or a user's own data, to a "
        "folder or zip file with a manifest of SHA-256 hashes; verify such an export "
        "(see docs/compliance.md). Each export is recorded in the audit log.",
    )
    kinds = export.add_subparsers(dest="export_command", required=True, metavar="COMMAND")

    room = kinds.add_parser(
        "room",
        help="a room's events in a time range, with attachments",
        description="Write events.jsonl, transcript.html, attachments/ and manifest.json "
        "for the room's events sent from --since to --until (both included).",
    )
    room.add_argument("--room", required=True, help="the room ID, e.g. !abc:example.org")
    _range_arguments(room)
    room.set_defaults(handler=_export_room)

    user = kinds.add_parser(
        "user",
        help="every event a user sent in a time range, in any room",
        description="Like 'export room', for the events one user (local or remote) sent in "
        "any room this server holds.",
    )
    user.add_argument("--user", required=True, help="the user ID, e.g. @alice:example.org")
    _range_arguments(user)
    user.set_defaults(handler=_export_user)

    personal = kinds.add_parser(
        "personal",
        help="a local user's own data (GDPR)",
        description="Write profile.json, devices.json (no access tokens), account_data.json, "
        "messages.jsonl (every event the user sent), media.json and media/ (their uploads) "
        "and manifest.json.",
    )
    personal.add_argument("--user", required=True, help="the user ID, e.g. @alice:example.org")
    _common_arguments(personal)
    personal.set_defaults(handler=_export_personal)

    verify = kinds.add_parser(
        "verify",
        help="check every file of an export against its manifest",
        description="Re-compute the SHA-256 of every file manifest.json lists (folder or "
        "zip). Exit status 1, naming each file, if one is missing, changed or unlisted.",
    )
    verify.add_argument("path", type=Path, help="the export's folder or zip file")
    verify.set_defaults(handler=_export_verify)


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="the config file")
    parser.add_argument(
        "--out", required=True, type=Path, help="the folder to create (or zip file with --zip)"
    )
    parser.add_argument("--zip", action="store_true", help="write one zip file instead")
    parser.add_argument("--reason", help="why (recorded in the manifest and the audit log)")
    parser.add_argument(
        "--actor", default=None, help="who, for the audit log (default: cli:export (<login name>))"
    )


def _range_arguments(parser: argparse.ArgumentParser) -> None:
    _common_arguments(parser)
    parser.add_argument(
        "--since",
        type=_since,
        help="from this time on (a date, an ISO 8601 time or ms since the epoch; UTC)",
    )
    parser.add_argument(
        "--until", type=_until, help="up to this time (a date includes that whole day)"
    )


def parse_time(text: str, *, end_of_day: bool = False) -> int:
    """Milliseconds since the epoch for a date (its start, or with ``end_of_day`` its last
    millisecond), an ISO 8601 time (UTC unless it names a zone) or milliseconds."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date, ISO 8601 time or milliseconds: {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if end_of_day and _DATE.fullmatch(text):
        moment += timedelta(days=1, milliseconds=-1)
    return int(moment.timestamp() * 1000)


def _since(text: str) -> int:
    return parse_time(text)


def _until(text: str) -> int:
    return parse_time(text, end_of_day=True)


class ProgressBar:
    """``[#####.....] 500/1234 events`` on ``stream``, redrawn in place as it changes."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self._stream = stream
        self._width = width
        self._last = ""

    def __call__(self, done: int, total: int | None) -> None:
        if total:
            filled = min(self._width, self._width * done // total)
            text = f"[{'#' * filled}{'.' * (self._width - filled)}] {done}/{total} events"
        else:
            text = f"{done} events"
        if text != self._last:
            self._stream.write(f"\r{text}")
            self._stream.flush()
            self._last = text

    def finish(self) -> None:
        if self._last:
            self._stream.write("\n")
            self._stream.flush()


def _export_room(args: argparse.Namespace) -> None:
    _export(args, "room", args.room)


def _export_user(args: argparse.Namespace) -> None:
    _export(args, "user", args.user)


def _export_personal(args: argparse.Namespace) -> None:
    _export(args, "personal", args.user)


def _export(args: argparse.Namespace, kind: str, target: str) -> None:
    from peyvand.cli.logs import setup_logging
    from peyvand.cli.loop import run
    from peyvand.config.loader import load_config

    config = load_config(args.config)
    setup_logging("WARNING")
    bar = ProgressBar(sys.stderr)
    try:
        result = run(_run_export(config, kind, target, args, bar))
    finally:
        bar.finish()
    media = f", {result.media} media file{'' if result.media == 1 else 's'}"
    missing = f" ({result.missing_media} missing)" if result.missing_media else ""
    print(f"exported {result.events} events{media}{missing} to {result.path}")
    print(f"manifest sha256 {result.manifest_sha256} (audit log entry {result.audit_seq})")


async def _run_export(
    config: Config, kind: str, target: str, args: argparse.Namespace, bar: ProgressBar
) -> ExportResult:
    from peyvand.app import open_database
    from peyvand.compliance.audit import AuditLog
    from peyvand.compliance.export import ComplianceExporter, ExportError
    from peyvand.media.files import MediaFiles
    from peyvand.storage.audit import AuditStore
    from peyvand.storage.compliance_reads import ComplianceReads
    from peyvand.storage.migrations import run_migrations

    db = await open_database(config.database)
    try:
        await run_migrations(db)
        # Read only: MediaFiles.start() (which empties tmp/) is the server's business.
        exporter = ComplianceExporter(
            ComplianceReads(db), MediaFiles(config.media_dir), AuditLog(AuditStore(db))
        )
        actor = args.actor or _default_actor()
        options: dict[str, Any] = {
            "actor": actor,
            "reason": args.reason,
            "as_zip": args.zip,
            "progress": bar,
        }
        try:
            if kind == "room":
                return await exporter.export_room(
                    target, args.since, args.until, args.out, **options
                )
            if kind == "user":
                return await exporter.export_user_messages(
                    target, args.since, args.until, args.out, **options
                )
            return await exporter.export_personal_data(target, args.out, **options)
        except ExportError as exc:
            raise CommandError(str(exc)) from exc
    finally:
        await db.close()


def _default_actor() -> str:
    try:
        return f"cli:export ({getpass.getuser()})"
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        return "cli:export"


def _export_verify(args: argparse.Namespace) -> None:
    from peyvand.compliance.export import manifest_sha256, verify_manifest

    problems = verify_manifest(args.path)
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        raise CommandError(
            f"export {args.path} FAILED verification, {len(problems)} {noun}:\n"
            + "\n".join(f"  {problem}" for problem in problems)
        )
    print(f"export OK: every file of {args.path} matches its SHA-256 in the manifest")
    print(f"manifest sha256 {manifest_sha256(args.path)} (compare with the audit log)")
