"""``peyvand hold place|list|release`` as an operator runs them (``python -m peyvand`` in a
child process), on the SQLite database of a config made by ``peyvand generate-config``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from peyvand.compliance.audit import AuditLog
from peyvand.config.loader import load_config
from peyvand.storage.audit import AuditStore
from peyvand.storage.legal_holds import LegalHoldStore
from peyvand.storage.sqlite import SqliteDatabase

ROOM = "!room:example.org"
ALICE = "@alice:example.org"
_PLACED = re.compile(r"placed legal hold ([0-9a-f]+) on (room|user) (\S+) \(case (.+)\)\n")


def peyvand(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peyvand", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def generated_config(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    generated = peyvand("generate-config", "--server-name", "example.org", "--data-dir", data_dir)
    assert generated.returncode == 0, generated.stderr
    return data_dir / "peyvand.toml"


def placed_id(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    match = _PLACED.fullmatch(result.stdout)
    assert match is not None, result.stdout
    return match.group(1)


async def test_place_list_and_release_holds(tmp_path: Path) -> None:
    config = generated_config(tmp_path)

    empty = peyvand("hold", "list", "--config", config)
    assert (empty.returncode, empty.stdout) == (0, "no active legal holds\n"), empty.stderr

    room = peyvand(
        "hold", "place", "--config", config, "--kind", "room", "--target", ROOM,
        "--case", "CASE-17", "--reason", "litigation",
        "--since", "2024-01-01", "--until", "2024-03-31",
    )  # fmt: skip
    room_id = placed_id(room)
    assert room.stdout == f"placed legal hold {room_id} on room {ROOM} (case CASE-17)\n"
    user = peyvand(
        "hold", "place", "--config", config, "--kind", "user", "--target", ALICE,
        "--case", "CASE-18", "--reason", "subpoena", "--since", "2024-02-01T12:30:00+02:00",
    )  # fmt: skip
    user_id = placed_id(user)

    listed = peyvand("hold", "list", "--config", config)
    assert listed.returncode == 0, listed.stderr
    blocks = listed.stdout.rstrip("\n").split("\n\n")
    assert len(blocks) == 2
    room_block, user_block = blocks
    header, reason, covers, placed, status = room_block.splitlines()
    assert header == f"hold {room_id}: room {ROOM}, case CASE-17"
    assert reason == "  reason: litigation"
    assert covers == "  covers: events sent from 2024-01-01T00:00:00Z to 2024-03-31T23:59:59.999Z"
    assert re.fullmatch(r"  placed: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z by cli:hold", placed)
    assert status == "  status: active"
    assert user_block.splitlines()[0] == f"hold {user_id}: user {ALICE}, case CASE-18"
    assert user_block.splitlines()[2] == "  covers: events sent from 2024-02-01T10:30:00Z"

    released = peyvand(
        "hold", "release", "--config", config, "--id", room_id, "--reason", "case closed"
    )  # fmt: skip
    assert released.returncode == 0, released.stderr
    assert released.stdout == f"released legal hold {room_id} on room {ROOM} (case CASE-17)\n"

    active = peyvand("hold", "list", "--config", config)
    assert active.returncode == 0, active.stderr
    assert active.stdout.startswith(f"hold {user_id}: ")
    assert room_id not in active.stdout

    everything = peyvand("hold", "list", "--config", config, "--all")
    assert everything.returncode == 0, everything.stderr
    first, second = everything.stdout.rstrip("\n").split("\n\n")
    assert first.startswith(f"hold {room_id}: ") and second.startswith(f"hold {user_id}: ")
    assert re.fullmatch(
        r"  status: released \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z by cli:hold: case closed",
        first.splitlines()[4],
    )

    again = peyvand("hold", "release", "--config", config, "--id", room_id, "--reason", "x")
    assert (again.returncode, again.stdout) == (1, "")
    assert again.stderr == "peyvand hold: Legal hold already released\n"

    # What the commands stored, and the audit log they wrote.
    db = await SqliteDatabase.open(load_config(config).database.sqlite_path)
    try:
        stored = await LegalHoldStore(db).get(room_id)
        assert stored is not None
        assert (stored.since_ts, stored.until_ts) == (1_704_067_200_000, 1_711_929_599_999)
        assert (stored.created_by, stored.released_by) == ("cli:hold", "cli:hold")
        assert stored.release_reason == "case closed"
        log = AuditLog(AuditStore(db))
        entries = await log.entries(0, 10)
        assert [(e["actor"], e["action"], e["target"]) for e in entries] == [
            ("cli:hold", "hold", ROOM),
            ("cli:hold", "hold", ALICE),
            ("cli:hold", "release", ROOM),
        ]
        assert (await log.verify()).ok
    finally:
        await db.close()


def test_hold_commands_refuse_bad_input(tmp_path: Path) -> None:
    config = generated_config(tmp_path)

    def place(*extra: str) -> subprocess.CompletedProcess[str]:
        return peyvand("hold", "place", "--config", config, "--case", "C", "--reason", "R", *extra)

    bad_target = place("--kind", "user", "--target", ROOM)
    assert (bad_target.returncode, bad_target.stdout) == (1, "")
    assert bad_target.stderr == f"peyvand hold: Not a user ID: {ROOM!r}\n"

    bad_date = place("--kind", "room", "--target", ROOM, "--since", "last tuesday")
    assert bad_date.returncode == 1
    assert bad_date.stderr.startswith("peyvand hold: not a date: 'last tuesday'")

    backwards = place(
        "--kind", "room", "--target", ROOM, "--since", "2024-02-01", "--until", "2024-01-01"
    )  # fmt: skip
    assert backwards.returncode == 1
    assert "'since_ts' is after 'until_ts'" in backwards.stderr

    bad_kind = place("--kind", "server", "--target", "example.org")
    assert bad_kind.returncode == 2  # argparse: bad usage

    unknown = peyvand("hold", "release", "--config", config, "--id", "nope", "--reason", "R")
    assert (unknown.returncode, unknown.stderr) == (1, "peyvand hold: Unknown legal hold\n")

    bare = peyvand("hold")
    assert bare.returncode == 2
    assert "COMMAND" in bare.stderr

    nothing = peyvand("hold", "list", "--config", config, "--all")
    assert (nothing.returncode, nothing.stdout) == (0, "no legal holds\n"), nothing.stderr
