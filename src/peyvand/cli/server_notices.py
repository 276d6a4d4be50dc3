"""``peyvand server-notice``: send a server notice (Client-Server API, "Server Notices")
to one local user or to every active local user, through the running server's admin API
(``cli/admin_api.py``): ``POST /_synapse/admin/v1/send_server_notice`` for one user,
``POST /_peyvand/admin/v1/server_notices/send_to_all`` a page at a time for everyone.

The notice is an ``m.room.message`` of ``msgtype`` ``m.server_notice`` with the given
``body`` and, when given, ``server_notice_type``, ``admin_contact`` and ``limit_type``.

Only the standard library is imported: ``peyvand --help`` stays light.
"""

from __future__ import annotations

import argparse
from typing import Any, Final

from peyvand.cli.admin_api import (
    ADMIN_PREFIX,
    TOKEN_VARIABLE,
    AdminAPI,
    add_config_argument,
    add_connection_arguments,
)
from peyvand.cli.errors import CommandError

DEFAULT_TIMEOUT: Final = 300.0
DEFAULT_PAGE_SIZE: Final = 100
MAX_PAGE_SIZE: Final = 1000
# Pages of a notice to everyone: enough for 100 million users at the largest page size.
MAX_PAGES: Final = 100_000


def add_server_notice_command(commands: Any) -> None:
    """Add ``server-notice`` to the ``peyvand`` command parser's ``add_subparsers()``."""
    notice = commands.add_parser(
        "server-notice",
        help="send a server notice to one user or to every local user",
        description="Send a server notice (msgtype m.server_notice) into each user's server "
        "notices room, made and the user invited on first use. Needs [server_notices] "
        "system_mxid_localpart in the config. Goes through the running server's admin API "
        f"with a server admin's access token (--token or ${TOKEN_VARIABLE}).",
    )
    add_config_argument(notice)
    target = notice.add_mutually_exclusive_group(required=True)
    target.add_argument("--user", help="the local user ID, e.g. @alice:example.org")
    target.add_argument("--all", action="store_true", help="every active local user")
    notice.add_argument("--body", required=True, help="the notice's text")
    notice.add_argument(
        "--notice-type", help="server_notice_type, e.g. m.server_notice.usage_limit_reached"
    )
    notice.add_argument("--admin-contact", help="admin_contact URI, e.g. mailto:ops@example.org")
    notice.add_argument("--limit-type", help="limit_type, e.g. monthly_active_user")
    notice.add_argument(
        "--page-size",
        type=_page_size,
        default=DEFAULT_PAGE_SIZE,
        help=f"users per request with --all (1-{MAX_PAGE_SIZE}, default {DEFAULT_PAGE_SIZE})",
    )
    add_connection_arguments(notice, timeout=DEFAULT_TIMEOUT)
    notice.set_defaults(handler=_send)


def _page_size(value: str) -> int:
    size = int(value)
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_PAGE_SIZE}")
    return size


def notice_content(args: argparse.Namespace) -> dict[str, Any]:
    """The ``m.server_notice`` message content the options describe."""
    content: dict[str, Any] = {"msgtype": "m.server_notice", "body": args.body}
    optional = {
        "server_notice_type": args.notice_type,
        "admin_contact": args.admin_contact,
        "limit_type": args.limit_type,
    }
    content.update({k: v for k, v in optional.items() if v is not None})
    return content


def _send(args: argparse.Namespace) -> None:
    api = AdminAPI.from_args(args)
    content = notice_content(args)
    if args.user is not None:
        answer = api.post(
            "/_synapse/admin/v1/send_server_notice", {"user_id": args.user, "content": content}
        )
        print(f"sent {answer.get('event_id')} to {args.user}")
        return
    sent, failed = _send_to_all(api, content, args.page_size)
    print(f"sent to {sent} user{'' if sent == 1 else 's'}")
    if failed:
        raise CommandError(f"not sent to {len(failed)} users: {', '.join(failed)}")


def _send_to_all(api: AdminAPI, content: dict[str, Any], page_size: int) -> tuple[int, list[str]]:
    """Every page, in user ID order, until the server names no next page."""
    sent, failed = 0, []
    after: Any = ""
    for _ in range(MAX_PAGES):
        page = api.post(
            f"{ADMIN_PREFIX}/server_notices/send_to_all",
            {"content": content, "from": after, "limit": page_size},
        )
        sent += int(page.get("sent", 0))
        failed += [str(user) for user in page.get("failed", [])]
        after = page.get("next_from")
        if not isinstance(after, str):
            return sent, failed
    raise CommandError(f"stopped after {MAX_PAGES} pages ({sent} users)")
