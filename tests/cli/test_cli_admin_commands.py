"""``peyvand retention``, ``peyvand reports`` and ``peyvand policy-lists`` as an operator
runs them: child processes talking to the session's running server through its admin API
(docs/compliance.md), on every backend, and their failures (no token, a non-admin's
token, an unknown room, no server): exit status 1 and one clear line, never a traceback.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness.admin import login_admin
from harness.client import Account, MatrixClient, unique_localpart
from harness.server import HomeserverProcess

ADMIN = "/_peyvand/admin/v1"
DAY_MS = 86_400_000
TIMER_MS = 3_600_000


def peyvand(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peyvand", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def _env(token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PEYVAND_ADMIN_TOKEN"}
    if token is not None:
        env["PEYVAND_ADMIN_TOKEN"] = token
    return env


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    return result.stdout


def _failed(result: subprocess.CompletedProcess[str], command: str) -> str:
    """The one line of a failed command's stderr."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"peyvand {command}: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


async def _send(client: MatrixClient, account: Account, room_id: str, body: str) -> str:
    sent = await client.request(
        "PUT",
        f"rooms/{room_id}/send/m.room.message/{unique_localpart('txn')}",
        json={"msgtype": "m.text", "body": body},
        token=account,
    )
    return str(sent.ok()["event_id"])


async def _audit_log(client: MatrixClient, admin: Account) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    start: int | None = 1
    while start is not None:
        page = (
            await client.request(
                "GET",
                f"{ADMIN}/audit_log",
                params={"from": str(start), "limit": "1000"},
                token=admin,
            )
        ).ok()
        entries += page["entries"]
        start = page.get("next")
    return entries


async def test_retention_show_and_run(homeserver: HomeserverProcess, client: MatrixClient) -> None:
    admin = await login_admin(client, homeserver)
    env = _env(admin.access_token)
    config = homeserver.config_path
    alice = await client.register()
    room_id = (
        await client.request(
            "POST",
            "createRoom",
            json={
                "initial_state": [
                    {"type": "m.room.retention", "content": {"max_lifetime": DAY_MS}},
                    {"type": "io.peyvand.disappearing", "content": {"timer_ms": TIMER_MS}},
                ]
            },
            token=alice,
        )
    ).ok()["room_id"]
    event_id = await _send(client, alice, room_id, "expires in a day")
    plain_room = (await client.request("POST", "createRoom", json={}, token=alice)).ok()["room_id"]
    kept_id = await _send(client, alice, plain_room, "kept forever")

    shown = _ok(peyvand("retention", "show", "--config", config, room_id, env=env))
    assert shown.splitlines() == [
        f"room {room_id}",
        f"max_lifetime: 1 day ({DAY_MS} ms): older history is purged",
        f"disappearing messages: 1 hour ({TIMER_MS} ms) after sending",
    ]
    plain = _ok(peyvand("retention", "show", "--config", config, plain_room, env=env))
    assert "max_lifetime: none: history is kept forever" in plain
    assert "disappearing messages: off" in plain

    # Two days from now, everything sent so far is more than a day old.
    later = datetime.now(UTC) + timedelta(days=2)
    run: list[str | Path] = ["retention", "run", "--config", config, "--room", room_id]
    when = later.strftime("%Y-%m-%dT%H:%M:%SZ")
    ran = _ok(peyvand(*run, "--now", when, "--reason", "cli test", env=env))
    lines = ran.splitlines()
    assert lines[0] == f"retention run over room {room_id}, as of {later:%Y-%m-%dT%H:%M:%S}Z"
    assert lines[1] == "rooms with a retention policy: 1"
    purged = re.fullmatch(
        r"purged: (\d+) events?, 0 media files; kept under legal hold: 0 events", lines[2]
    )
    assert purged is not None and int(purged[1]) >= 1, ran
    gone = await client.request("GET", f"rooms/{room_id}/event/{event_id}", token=alice)
    assert gone.status == 404, gone.body
    page = await client.request(
        "GET", f"rooms/{room_id}/messages", params={"dir": "b", "limit": "100"}, token=alice
    )
    assert "expires in a day" not in str(page.ok()["chunk"])
    # The room works, and its policy is still shown.
    await _send(client, alice, room_id, "after the purge")
    assert "max_lifetime: 1 day" in _ok(
        peyvand("retention", "show", "--config", config, room_id, env=env)
    )

    # A room without a policy: nothing purged, whatever the time (given in milliseconds).
    far = str(int(time.time() * 1000) + 365 * DAY_MS)
    untouched = _ok(
        peyvand("retention", "run", "--config", config, "--room", plain_room, "--now", far, env=env)
    )
    assert "rooms with a retention policy: 0" in untouched
    assert "nothing purged" in untouched
    (await client.request("GET", f"rooms/{plain_room}/event/{kept_id}", token=alice)).ok()

    # The runs are in the audit log, with the token's owner as the actor.
    entries = [e for e in await _audit_log(client, admin) if e["target"] == room_id]
    assert [(e["action"], e["actor"], e["reason"]) for e in entries] == [
        ("purge", admin.user_id, "cli test")
    ]
    assert entries[0]["details"]["now_ts"] == int(later.timestamp()) * 1000


async def test_reports_list_and_show(homeserver: HomeserverProcess, client: MatrixClient) -> None:
    admin = await login_admin(client, homeserver)
    env = _env(admin.access_token)
    config = homeserver.config_path
    alice = await client.register()
    room_id = (await client.request("POST", "createRoom", json={}, token=alice)).ok()["room_id"]
    event_id = await _send(client, alice, room_id, "spam spam spam")
    reason = unique_localpart("offensive")
    (
        await client.request(
            "POST",
            f"rooms/{room_id}/report/{event_id}",
            json={"reason": reason, "score": -100},
            token=alice,
        )
    ).ok()
    (
        await client.request(
            "POST", f"rooms/{room_id}/report", json={"reason": reason + "-room"}, token=alice
        )
    ).ok()
    newest = (await client.request("GET", f"{ADMIN}/reports", token=admin)).ok()["reports"]
    room_report, event_report = newest[0], newest[1]
    assert (room_report["reason"], event_report["reason"]) == (reason + "-room", reason)

    listed = _ok(peyvand("reports", "list", "--config", config, env=env))
    assert f"report {event_report['id']}: event report by {alice.user_id}" in listed
    assert f"  reason: {reason}\n" in listed
    assert f"report {room_report['id']}: room report by {alice.user_id}" in listed

    # A page at a time, newest first.
    first = _ok(peyvand("reports", "list", "--config", config, "--limit", "1", env=env))
    assert first.startswith("1 report, newest first (")
    assert f"report {room_report['id']}: room report" in first
    assert f"report {event_report['id']}:" not in first
    next_token = re.search(r"older reports: --from (\d+)$", first.strip())
    assert next_token is not None, first
    listing: list[str | Path] = ["reports", "list", "--config", config, "--limit", "1"]
    second = _ok(peyvand(*listing, "--from", next_token[1], env=env))
    assert f"report {event_report['id']}: event report" in second

    shown = _ok(peyvand("reports", "show", "--config", config, str(event_report["id"]), env=env))
    lines = shown.splitlines()
    assert lines[0] == f"report {event_report['id']}: event report by {alice.user_id}"
    assert re.fullmatch(r"  received: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", lines[1])
    assert lines[2:] == [
        f"  room: {room_id}",
        f"  event: {event_id}",
        "  score: -100",
        f"  reason: {reason}",
    ]

    missing = peyvand("reports", "show", "--config", config, "999999999", env=env)
    assert "404 M_NOT_FOUND: No such report" in _failed(missing, "reports")


async def test_policy_lists_show_without_lists(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    admin = await login_admin(client, homeserver)
    command: list[str | Path] = ["policy-lists", "show", "--config", homeserver.config_path]
    shown = _ok(peyvand(*command, "--token", admin.access_token, env=_env(None)))
    lines = shown.splitlines()
    assert lines[0].startswith("policy user: @")
    assert lines[1:] == [
        "no policy lists are followed (moderation.policy_rooms is empty)",
        "rules in force: 0 (0 user, 0 server, 0 room)",
    ]


async def test_failures_exit_1_with_a_clear_message(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    admin = await login_admin(client, homeserver)
    alice = await client.register()
    config = homeserver.config_path
    room_id = (await client.request("POST", "createRoom", json={}, token=alice)).ok()["room_id"]
    commands: list[tuple[str, list[str | Path]]] = [
        ("retention", ["retention", "show", "--config", config, room_id]),
        ("retention", ["retention", "run", "--config", config, "--room", room_id]),
        ("reports", ["reports", "list", "--config", config]),
        ("reports", ["reports", "show", "--config", config, "1"]),
        ("policy-lists", ["policy-lists", "show", "--config", config]),
    ]
    with socket.socket() as probe:  # a port nothing listens on: bound and closed again
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    for name, command in commands:
        no_token = _failed(peyvand(*command, env=_env(None)), name)
        assert "PEYVAND_ADMIN_TOKEN" in no_token
        not_admin = _failed(peyvand(*command, env=_env(alice.access_token)), name)
        assert "the server refused: 403 M_FORBIDDEN" in not_admin
        unreachable = _failed(
            peyvand(*command, "--url", f"http://127.0.0.1:{closed_port}", env=_env("x")), name
        )
        assert f"cannot reach the server at http://127.0.0.1:{closed_port}" in unreachable

    env = _env(admin.access_token)
    unknown = f"!nosuchroom{time.time_ns()}:{homeserver.server_name}"
    unknown_room: list[list[str | Path]] = [
        ["retention", "show", "--config", config, unknown],
        ["retention", "run", "--config", config, "--room", unknown],
    ]
    for command in unknown_room:
        failed = _failed(peyvand(*command, env=env), "retention")
        assert "404 M_NOT_FOUND: Unknown room" in failed
    bad_date = peyvand("retention", "run", "--config", config, "--now", "tomorrow", env=env)
    assert "not a date: 'tomorrow'" in _failed(bad_date, "retention")
    bad_url = peyvand("reports", "list", "--config", config, "--url", "example.org", env=env)
    assert "not an http:// or https:// URL" in _failed(bad_url, "reports")


def test_durations_and_times_read_as_written() -> None:
    from peyvand.cli.dates import format_duration
    from peyvand.cli.retention import parse_now

    assert format_duration(DAY_MS) == "1 day"
    assert format_duration(2 * DAY_MS + 3_600_000 + 30_000) == "2 days 1 hour 30 seconds"
    assert format_duration(1500) == "1 second 500 milliseconds"
    assert format_duration(0) == "0 seconds"
    assert parse_now("1711929600000") == 1_711_929_600_000
    assert parse_now("2024-04-01") == 1_711_929_600_000
    assert parse_now("2024-04-01T02:00:00+02:00") == 1_711_929_600_000
