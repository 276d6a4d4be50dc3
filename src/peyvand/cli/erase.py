"""``peyvand erase-user``: deactivate and erase an account (docs/compliance.md, "Erasure").

Unlike the other operator commands this one does not open the database: the running
server caches access tokens, events and profiles, so the account is erased by the server
itself, through its admin API (``POST /_peyvand/admin/v1/users/{userId}/deactivate``),
with a server admin's access token (``--token`` or the environment variable
``PEYVAND_ADMIN_TOKEN``). The server is found at the config's ``bind`` and ``port``
unless ``--url`` names it. The admin API records the erasure in the audit log, with the
token's owner as the actor.

Only the standard library is imported: ``peyvand --help`` stays light.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from peyvand.cli.errors import CommandError

TOKEN_VARIABLE = "PEYVAND_ADMIN_TOKEN"
DEFAULT_TIMEOUT = 600.0

# A server listening on every address is reached on the loopback one.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


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
    erase.add_argument("--config", required=True, type=Path, help="the config file")
    erase.add_argument("--user", required=True, help="the user ID, e.g. @alice:example.org")
    erase.add_argument("--reason", help="why (recorded in the audit log)")
    erase.add_argument(
        "--no-erase",
        action="store_true",
        help="only deactivate the account (and leave its rooms); erase nothing",
    )
    erase.add_argument(
        "--url", help="the server's base URL (default: http://BIND:PORT from the config)"
    )
    erase.add_argument(
        "--token", help=f"a server admin's access token (default: ${TOKEN_VARIABLE})"
    )
    erase.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for the server (default {DEFAULT_TIMEOUT:g})",
    )
    erase.set_defaults(handler=_erase_user)


def _erase_user(args: argparse.Namespace) -> None:
    from peyvand.config.loader import load_config

    token = args.token or os.environ.get(TOKEN_VARIABLE)
    if not token:
        raise CommandError(f"a server admin's access token is needed: --token or ${TOKEN_VARIABLE}")
    config = load_config(args.config)
    base_url = args.url or local_base_url(config.bind, config.port)
    body: dict[str, Any] = {"erase": not args.no_erase}
    if args.reason is not None:
        body["reason"] = args.reason
    report = post_deactivate(base_url, token, args.user, body, args.timeout)
    print(describe(report))


def local_base_url(bind: str, port: int) -> str:
    """``http://host:port`` for a server listening on ``bind``:``port``."""
    host = _LOOPBACK.get(bind, bind)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def post_deactivate(
    base_url: str, token: str, user_id: str, body: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """The admin API's answer to deactivating ``user_id``; ``CommandError`` if the server
    cannot be reached or refuses."""
    path = f"/_peyvand/admin/v1/users/{urllib.parse.quote(user_id, safe='@:')}/deactivate"
    url = base_url.rstrip("/") + path
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise CommandError(f"the server refused: {_error_text(exc)}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandError(f"cannot reach the server at {base_url}: {reason}") from exc
    except ValueError as exc:
        raise CommandError(f"the server at {base_url} did not answer JSON") from exc
    if not isinstance(answer, dict):
        raise CommandError(f"the server at {base_url} did not answer a JSON object")
    return answer


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read())
    except (ValueError, OSError):
        error = None
    if isinstance(error, dict) and "errcode" in error:
        return f"{exc.code} {error['errcode']}: {error.get('error', '')}".rstrip(": ")
    return f"HTTP {exc.code} {exc.reason}"


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
