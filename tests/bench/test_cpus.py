"""``bench.cpus``: the server and the bench's client on CPUs of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: bench/

from bench import cpus


def test_the_server_runs_on_its_half_and_the_client_keeps_the_rest() -> None:
    usable = sorted(os.sched_getaffinity(0))
    placement = cpus.split()
    if len(usable) < 2:
        assert placement is None
        return
    assert placement is not None
    assert placement.server and placement.client
    assert sorted(placement.server + placement.client) == usable
    assert not set(placement.server) & set(placement.client)
    # A thread the server starts runs where the server does.
    probe = (
        "import os, threading; "
        "threading.Thread(target=print, args=(sorted(os.sched_getaffinity(0)),)).start()"
    )
    shown = subprocess.run(
        placement.taskset([sys.executable, "-c", probe]),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert shown.strip() == str(list(placement.server))
    assert placement.to_json() == {
        "server": list(placement.server),
        "client": list(placement.client),
    }
