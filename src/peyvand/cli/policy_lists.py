"""``peyvand policy-lists show``: the moderation policy lists this server follows
(docs/compliance.md, "Moderation policy lists"), through the running server's admin API
(``GET /_peyvand/admin/v1/policy_lists``; ``cli/admin_api.py``).

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
)

DEFAULT_TIMEOUT = 60.0
_KINDS = ("user", "server", "room")


def add_policy_lists_command(commands: Any) -> None:
    """Add ``policy-lists show`` to the ``peyvand`` command parser's subparsers."""
    policy_lists = commands.add_parser(
        "policy-lists",
        help="the moderation policy lists this server follows",
        description="Moderation policy lists (see docs/compliance.md). Goes through the "
        "running server's admin API with a server admin's access token (--token or "
        f"${TOKEN_VARIABLE}).",
    )
    subcommands = policy_lists.add_subparsers(
        dest="policy_lists_command", required=True, metavar="COMMAND"
    )
    show = subcommands.add_parser(
        "show",
        help="show the lists followed and the rules in force",
        description="Show the policy rooms followed (moderation.policy_rooms) with their "
        "status and rule counts, then every m.ban rule in force.",
    )
    add_config_argument(show)
    add_connection_arguments(show, timeout=DEFAULT_TIMEOUT)
    show.set_defaults(handler=_show)


def _show(args: argparse.Namespace) -> None:
    api = AdminAPI.from_args(args)
    print(describe(api.get(f"{ADMIN_PREFIX}/policy_lists")))


def describe(answer: dict[str, Any]) -> str:
    """``GET /_peyvand/admin/v1/policy_lists``'s answer for an operator."""
    rooms = [r for r in answer.get("rooms", []) if isinstance(r, dict)]
    rules = [r for r in answer.get("rules", []) if isinstance(r, dict)]
    lines = [f"policy user: {answer.get('policy_user')}"]
    if not rooms:
        lines.append("no policy lists are followed (moderation.policy_rooms is empty)")
    else:
        lines.append(f"lists followed: {len(rooms)}")
        lines += [f"  {_room(r)}" for r in rooms]
    counts = answer.get("counts")
    counts = counts if isinstance(counts, dict) else {}
    by_kind = ", ".join(f"{counts.get(k, 0)} {k}" for k in _KINDS)
    lines.append(f"rules in force: {len(rules)} ({by_kind})")
    lines += [f"  {_rule(r)}" for r in rules]
    return "\n".join(lines)


def _room(room: dict[str, Any]) -> str:
    configured, room_id = room.get("room"), room.get("room_id")
    name = str(configured)
    if room_id and room_id != configured:
        name += f" ({room_id})"
    count = room.get("rules", 0)
    text = f"{name}: {room.get('status')}, {count} rule{'' if count == 1 else 's'}"
    if room.get("error"):
        text += f"; last error: {room['error']}"
    return text


def _rule(rule: dict[str, Any]) -> str:
    text = f"{rule.get('recommendation')} {rule.get('kind')} {rule.get('entity')}"
    if rule.get("reason"):
        text += f": {rule['reason']}"
    return text + f" (in {rule.get('room_id')}, {rule.get('type')} {rule.get('state_key')!r})"
