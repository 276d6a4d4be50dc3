"""``peyvand reports list|show``: the content reports users sent (docs/compliance.md,
"Reports and invite limits"), through the running server's admin API
(``GET /_peyvand/admin/v1/reports`` and ``.../reports/{id}``; ``cli/admin_api.py``).

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
from peyvand.cli.dates import format_ts

DEFAULT_TIMEOUT = 60.0
DEFAULT_LIMIT = 100


def add_reports_command(commands: Any) -> None:
    """Add ``reports list|show`` to the ``peyvand`` command parser's subparsers."""
    reports = commands.add_parser(
        "reports",
        help="the reports users sent about events, rooms and users",
        description="Content reports (see docs/compliance.md): list them, newest first, or "
        "show one. Goes through the running server's admin API with a server admin's access "
        f"token (--token or ${TOKEN_VARIABLE}).",
    )
    subcommands = reports.add_subparsers(dest="reports_command", required=True, metavar="COMMAND")
    listing = subcommands.add_parser(
        "list",
        help="list reports, newest first",
        description="List reports, newest first, a page at a time; the last line names the "
        "--from token of the next (older) page when there is one.",
    )
    add_config_argument(listing)
    listing.add_argument(
        "--limit",
        type=_positive,
        default=DEFAULT_LIMIT,
        help=f"reports per page, 1 to 1000 (default {DEFAULT_LIMIT})",
    )
    listing.add_argument(
        "--from", dest="from_token", help="start after this token (from the previous page)"
    )
    add_connection_arguments(listing, timeout=DEFAULT_TIMEOUT)
    listing.set_defaults(handler=_list)
    show = subcommands.add_parser("show", help="show one report", description="Show a report.")
    add_config_argument(show)
    show.add_argument("report_id", metavar="ID", help="the report's ID (from reports list)")
    add_connection_arguments(show, timeout=DEFAULT_TIMEOUT)
    show.set_defaults(handler=_show)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return value


def _list(args: argparse.Namespace) -> None:
    api = AdminAPI.from_args(args)
    page = api.get(f"{ADMIN_PREFIX}/reports", {"limit": args.limit, "from": args.from_token})
    print(describe_page(page))


def _show(args: argparse.Namespace) -> None:
    api = AdminAPI.from_args(args)
    print(describe(api.get(f"{ADMIN_PREFIX}/reports/{segment(args.report_id, safe='')}")))


def describe_page(page: dict[str, Any]) -> str:
    """A page of ``GET /_peyvand/admin/v1/reports``: one block per report, newest first."""
    reports = [r for r in page.get("reports", []) if isinstance(r, dict)]
    total = page.get("total")
    if not reports:
        return "no reports" if not total else f"no more reports ({total} in all)"
    shown = f"{len(reports)} report{'' if len(reports) == 1 else 's'}"
    lines = [f"{shown}, newest first ({total} in all)", ""]
    lines.append("\n\n".join(describe(r) for r in reports))
    if "next_token" in page:
        lines += ["", f"older reports: --from {page['next_token']}"]
    return "\n".join(lines)


def describe(report: dict[str, Any]) -> str:
    """One report (``api.admin.reports._json``)."""
    received = report.get("received_ts")
    lines = [
        f"report {report.get('id')}: {report.get('kind')} report by {report.get('reporter')}",
        f"  received: {format_ts(received) if isinstance(received, int) else received}",
    ]
    for key, label in (
        ("room_id", "room"),
        ("event_id", "event"),
        ("user_id", "user"),
        ("score", "score"),
    ):
        if key in report:
            lines.append(f"  {label}: {report[key]}")
    reason = report.get("reason")
    lines.append(f"  reason: {reason}" if reason else "  reason: (none given)")
    return "\n".join(lines)
