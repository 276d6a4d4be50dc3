"""``bench.federated_join`` at a tiny size: a real origin Synapse (``.synapse-venv``), a
room of a few members set up through its admin API, joined over federation by Peyvand on
each backend and, through the command itself, by a second Synapse; every step is timed."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.client import new_session
from harness.required import require_installed
from harness.server import start_homeserver
from harness.synapse import SynapseProcess, SynapseUnavailable, synapse_python

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: bench/

from bench.join_timing import JoinBounds, JoinFigures, time_join

from bench import client, federated_join, origin_room, procstat

MEMBERS = 4
BOUNDS = JoinBounds(ready_seconds=30.0, members_seconds=30.0)


@pytest.fixture(scope="module")
def synapse_venv_python() -> Path:
    """Synapse's Python: skipped locally, failed under CI, when Synapse is not installed."""
    return require_installed("Synapse", synapse_python, SynapseUnavailable)


@pytest.fixture(scope="module")
def origin(
    synapse_venv_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SynapseProcess]:
    server = SynapseProcess(
        tmp_path_factory.mktemp("origin"), synapse_venv_python, log_level="WARNING"
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


async def test_peyvand_joins_an_origin_room(
    origin: SynapseProcess, backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    peyvand = start_homeserver(backend, request, tmp_path / "peyvand", federation=True)
    try:
        async with new_session() as session:
            room = await origin_room.fill_room(
                session,
                origin.client_url,
                origin.registration_shared_secret,
                MEMBERS,
                concurrency=2,
                deadline=time.perf_counter() + 60,
            )
            assert (room.registered, room.members, room.truncated) == (MEMBERS, MEMBERS, False)
            assert room.creator is not None
            joiner = client.MatrixClient(session, peyvand.base_url)
            user = await joiner.register(f"joiner-{backend}-{os.getpid()}")
            figures = JoinFigures("peyvand", expected_members=MEMBERS + 1)
            await time_join(
                joiner,
                user,
                client.MatrixClient(session, origin.client_url),
                room.creator,
                room.room_id,
                origin.server_name,
                figures,
                BOUNDS,
                lambda: procstat.tree_cpu_seconds(peyvand.pid),
            )
    finally:
        peyvand.stop()

    assert (figures.join_status, figures.error) == (200, "")
    steps = [
        figures.join_seconds,
        figures.read_seconds,
        figures.send_accepted_seconds,
        figures.send_seen_seconds,
    ]
    assert steps[0] > 0 and steps == sorted(steps) and steps[-1] < 60
    assert figures.join_seconds < figures.members_seconds < 60
    assert figures.ready_seconds == figures.send_seen_seconds
    assert figures.members_seen == MEMBERS + 1
    assert 0 < figures.members_first_poll <= MEMBERS + 1
    assert figures.cpu_seconds >= 0


def test_the_command_times_both_joiners(
    synapse_venv_python: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert federated_join.main(["--members", str(MEMBERS), "--out", str(tmp_path)]) == 0

    [path] = tmp_path.glob("federated-join-*-sqlite.json")
    document = json.loads(path.read_text())
    assert document["origin"]["members"] == MEMBERS
    for name in ("peyvand", "synapse"):
        figures = document["joiners"][name]
        assert (figures["join_status"], figures["error"]) == (200, "")
        assert 0 < figures["join_seconds"] <= figures["members_seconds"] < 120
        assert figures["members_seen"] == MEMBERS + 1
        assert figures["rss_peak_bytes"] > 0
    ready = next(row for row in document["rows"] if row["key"] == "ready")
    assert 0 < ready["peyvand"] < 120 and 0 < ready["synapse"] < 120
    output = capsys.readouterr().out
    assert "| can read and send | s |" in output
    assert "readable and writable from Peyvand within 5 s of /join" in output
