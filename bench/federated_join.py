"""``python -m bench.federated_join [--members N] [--only NAME]``: a federated join of a big
room, Peyvand beside Synapse (issue 15).

An origin Synapse holds a public room of ``N`` members (default 5,000, the creator
included), registered through its shared-secret admin API and joined through the
Client-Server API, 16 requests at a time (``bench.origin_room``; set-up, not timed). Then
each joiner in turn, Peyvand and a second Synapse, each fresh on SQLite: a user of the
joiner joins the room via the origin, timed by ``bench.join_timing`` (join returned; can
read; can send, the event seen on the origin; full member list) and leaves, untimed. A
joiner that has left keeps running, idle, until the end: the room's history holds its
events, whose signatures the next joiner checks with its keys. The origin is restarted
before each joiner, so each meets it cold.

The servers are the federation tests' (``bench.federating``: loopback, TLS, server names
``127.0.0.1:<port>``), Synapse logging at WARNING. The table goes to stdout, the figures
to ``bench/results/federated-join-<timestamp>-sqlite.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import procstat, report
from bench.client import MatrixClient, new_session
from bench.federating import (
    HomeserverProcess,
    SynapseProcess,
    new_peyvand,
    new_synapse,
    synapse_version,
)
from bench.join_timing import JoinBounds, JoinFigures, leave, time_join
from bench.origin_room import OriginRoom, fill_room
from bench.run import RESULTS_DIR, _git, _loop_factory, log, machine

DEFAULT_MEMBERS = 5000
SETUP_CONCURRENCY = 16
SETUP_SECONDS = 3600.0
# Registering the joiner's user, leaving, and slack for the bounded steps' last requests.
JOINER_SLACK_SECONDS = 180.0
# The acceptance of issue 15: readable and writable from Peyvand within 5 s of /join.
READY_TARGET_SECONDS = 5.0
JOINERS = ("peyvand", "synapse")
LOG_LINES = 40

Joiner = HomeserverProcess | SynapseProcess


@dataclass(slots=True)
class FederatedJoinRun:
    origin_version: str
    room: OriginRoom
    joiners: dict[str, JoinFigures] = field(default_factory=dict)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.federated_join", description=__doc__)
    parser.add_argument("--members", type=int, default=DEFAULT_MEMBERS, help="room size")
    parser.add_argument("--only", choices=JOINERS, help="one joiner only")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.members < 1:
        parser.error("--members must be at least 1")
    names = [args.only] if args.only else list(JOINERS)
    bounds = JoinBounds()
    started = time.monotonic()
    load_before = os.getloadavg()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        run = measure(runner, args.members, names, bounds)
    summary = summarize(run)
    document = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "benchmark": "federated join",
        "database": "sqlite",
        "members": args.members,
        "bounds": asdict(bounds),
        "machine": machine(),
        # Other work on the machine meanwhile: 1, 5 and 15 minute load averages.
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "commit": _git("rev-parse", "HEAD"),
        "origin": {
            "version": run.origin_version,
            **{k: v for k, v in asdict(run.room).items() if k != "creator"},
        },
        "joiners": {name: asdict(figures) for name, figures in run.joiners.items()},
        **summary,
        "seconds": round(time.monotonic() - started, 1),
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"federated-join-{stamp}-sqlite.json"
    report.write_json(path, document)
    print(report.table(summary))
    print(f"\n{acceptance(run)}\n{args.members:,} members, {document['seconds']} s; JSON: {path}")
    return 0


def measure(
    runner: asyncio.Runner, members: int, names: list[str], bounds: JoinBounds
) -> FederatedJoinRun:
    """Set up the origin's room, then time each joiner's join; every directory removed."""
    work_dir = Path(tempfile.mkdtemp(prefix="bench-federated-join-"))
    origin = new_synapse(work_dir / "origin")
    joiners: list[Joiner] = []
    try:
        origin.start()
        log(f"==> origin Synapse {origin.server_name}: a room of {members:,} members")
        room = runner.run(_fill(origin, members))
        log(
            f"  registered {room.registered:,} in {room.register_seconds} s, "
            f"joined {room.members:,} in {room.join_seconds} s"
        )
        run = FederatedJoinRun(synapse_version(), room)
        for name in names:
            origin.restart()
            log(f"==> {name} joins")
            data_dir = work_dir / name
            data_dir.mkdir()
            joiner = new_peyvand(data_dir) if name == "peyvand" else new_synapse(data_dir)
            joiners.append(joiner)
            run.joiners[name] = _measure_joiner(runner, name, joiner, origin, room, bounds)
        return run
    except BaseException:
        log(f"  the origin's log ends:\n{_tail(origin.log())}")
        raise
    finally:
        for server in (*joiners, origin):
            server.stop()
        shutil.rmtree(work_dir, ignore_errors=True)


async def _fill(origin: SynapseProcess, members: int) -> OriginRoom:
    async with new_session() as session:
        return await fill_room(
            session,
            origin.client_url,
            origin.registration_shared_secret,
            members,
            SETUP_CONCURRENCY,
            time.perf_counter() + SETUP_SECONDS,
        )


def _measure_joiner(
    runner: asyncio.Runner,
    name: str,
    server: Joiner,
    origin: SynapseProcess,
    room: OriginRoom,
    bounds: JoinBounds,
) -> JoinFigures:
    """One fresh joiner, started and measured (the caller stops it)."""
    figures = JoinFigures(name, expected_members=room.members + 1)
    figures.version = version("peyvand") if name == "peyvand" else synapse_version()
    sampler: procstat.Sampler | None = None
    budget = 2 * bounds.ready_seconds + bounds.members_seconds + JOINER_SLACK_SECONDS
    try:
        server.start()
        sampler = procstat.Sampler(server.pid)
        sampler.start()
        runner.run(asyncio.wait_for(_join(server, origin, room, figures, bounds), budget))
        sampler.stop()
        figures.rss_peak_bytes = sampler.peak_bytes
        log(
            f"  join {figures.join_seconds:.2f} s, read {figures.read_seconds:.2f} s, "
            f"send seen {figures.send_seen_seconds:.2f} s, {figures.members_seen:,} members "
            f"at {figures.members_seconds:.2f} s {figures.error}"
        )
        return figures
    except BaseException:
        log(f"  {name} failed; its log ends:\n{_tail(server.log())}")
        raise
    finally:
        if sampler is not None:
            sampler.stop()


async def _join(
    server: Joiner,
    origin: SynapseProcess,
    room: OriginRoom,
    figures: JoinFigures,
    bounds: JoinBounds,
) -> None:
    assert room.creator is not None
    pid = server.pid
    async with new_session() as session:
        joiner = MatrixClient(session, server.base_url)
        origin_client = MatrixClient(session, origin.client_url)
        user = await joiner.register(f"joiner{uuid.uuid4().hex[:8]}")
        await time_join(
            joiner,
            user,
            origin_client,
            room.creator,
            room.room_id,
            origin.server_name,
            figures,
            bounds,
            lambda: procstat.tree_cpu_seconds(pid),
        )
        if figures.join_status == 200 and not await leave(
            joiner, user, origin_client, room.creator, room.room_id, bounds
        ):
            log(f"  the origin has not seen {user.user_id} leave")


def summarize(run: FederatedJoinRun) -> dict[str, Any]:
    """The side-by-side rows (Peyvand, the joining Synapse) and no ratio targets: the
    issue's acceptance is absolute (``acceptance``)."""
    members = run.room.members + 1

    def both(key: str, label: str, unit: str, better_high: bool, attr: str) -> dict[str, Any]:
        values = [
            float(getattr(run.joiners[name], attr)) if name in run.joiners else math.nan
            for name in JOINERS
        ]
        return report.row(key, label, unit, better_high, values[0], values[1])

    rows = [
        both("join", "/join returned", "s", False, "join_seconds"),
        both("read", "can read: /messages has the latest event", "s", False, "read_seconds"),
        both("send", "can send: PUT /send answered 200", "s", False, "send_accepted_seconds"),
        both("seen", "can send: the event is on the origin", "s", False, "send_seen_seconds"),
        both("ready", "can read and send", "s", False, "ready_seconds"),
        both("members", f"full member list ({members:,} joined)", "s", False, "members_seconds"),
        both("first", "members in the first /joined_members answer", "count", True,
             "members_first_poll"),
        both("cpu", "joiner CPU, /join until every step is done", "s", False, "cpu_seconds"),
    ]  # fmt: skip
    rss = [
        run.joiners[name].rss_peak_bytes / report.MIB if name in run.joiners else math.nan
        for name in JOINERS
    ]
    rows.append(report.row("rss", "joiner peak RSS", "MiB", False, rss[0], rss[1]))
    return report.summarize(rows, [])


def acceptance(run: FederatedJoinRun) -> str:
    """Issue 15's acceptance, as measured: Peyvand readable and writable within 5 s."""
    peyvand = run.joiners.get("peyvand")
    seconds = peyvand.ready_seconds if peyvand else math.nan
    verdict = "PASS" if seconds <= READY_TARGET_SECONDS else "MISS"
    return (
        f"readable and writable from Peyvand within {READY_TARGET_SECONDS:.0f} s of /join: "
        f"{seconds:.2f} s, {verdict}"
    )


def _tail(text: str) -> str:
    return "\n".join(text.splitlines()[-LOG_LINES:])


if __name__ == "__main__":
    raise SystemExit(main())
