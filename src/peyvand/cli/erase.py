"""``peyvand erase-user``: deactivate and erase an account (docs/compliance.md, "Erasure").

Unlike the other operator commands this one does not open the database: the running
server caches access tokens, events and profiles, so the account is erased by the server
itself, through its admin API (``POST /_peyvand/admin/v1/users/{userId}/deactivate``),
with a server admin's access token (``--token`` or the environment variable
``PEYVAND_ADMIN_TOKEN``). The server is found at the config's ``bind`` and ``port``
unless ``--url`` names it. The admin API records the erasure in the audit log, with the
token's owner as the actor. The HTTP plumbing is ``cli/admin_api.py``.

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

DEFAULT_TIMEOUT = 600.0


def add_erase_command(commands: Any) -> None:
    """Add ``erase-user`` to the ``peyvand`` command parser's ``add_subparsers()`` result."""
    erase = commands.add_parser(
        "erase-user",
        help="deactivate an account and erase its profile, media and messages",
        description="Deactivate a local account (logged out everywhere, out of every room) "
        "and erase its display name, avatar, uploaded media and the content of every event "
        "it sent, except what a legal hold covers. Goes through the running server's admin "
        f"API with a server admin's access token (--token or ${TOKEN_VARIABLE}); recorded in "
        "the audit log.",
    )
    add_config_argument(erase)
    erase.add_argument("--user", required=True, help="the user ID, e.g. @alice:example.org")
    erase.add_argument("--reason", help="why (recorded in the audit log)")
    erase.add_argument(
        "--no-erase",
        action="store_true",
        help="only deactivate the account (and leave its rooms); erase nothing",
    )
    add_connection_arguments(erase, timeout=DEFAULT_TIMEOUT)
    erase.set_defaults(handler=_erase_user)


def _erase_user(args: argparse.Namespace) -> None:
    api = AdminAPI.from_args(args)
    body: dict[str, Any] = {"erase": not args.no_erase}
    if args.reason is not None:
        body["reason"] = args.reason
    report = api.post(f"{ADMIN_PREFIX}/users/{segment(args.user, safe='@:')}/deactivate", body)
    print(describe(report))


def describe(report: dict[str, Any]) -> str:
    """The admin API's report (``api.admin.users.erasure_json``) for an operator."""
    rooms = report.get("rooms_left", 0)
    lines = [
        f"deactivated {report.get('user_id')}: logged out, left {rooms} "
        f"room{'' if rooms == 1 else 's'}"
    ]
    if not report.get("erased"):
        lines.append("nothing erased (--no-erase)")
        return "\n".join(lines)
    profile = "kept (legal hold)" if report.get("profile_kept") else "deleted"
    lines += [
        f"profile (display name, avatar): {profile}",
        f"events erased: {report.get('events_erased', 0)}, "
        f"kept under legal hold: {report.get('events_held', 0)}",
        f"media deleted: {report.get('media_deleted', 0)}, "
        f"kept under legal hold: {report.get('media_held', 0)}",
    ]
    return "\n".join(lines)
