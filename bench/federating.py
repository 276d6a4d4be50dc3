"""Federating homeservers for ``bench.federated_join``, from the test harness: the same
Peyvand (``tests/harness/server.py``) and Synapse 1.163.2 (``tests/harness/synapse.py``,
``<repo>/.synapse-venv``) that ``tests/federation`` runs, on a loopback test network
(server names ``127.0.0.1:<port>``, self-signed TLS, keys fetched from the origin itself).

For a benchmark, Synapse logs at WARNING (its test configuration logs every SQL statement)
and Peyvand runs on SQLite with its generated configuration; every rate limit of both is
out of reach, as in the tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # harness.*

from harness.server import HomeserverProcess
from harness.synapse import SynapseProcess, shared_secret_registration, synapse_python

__all__ = [
    "HomeserverProcess",
    "SynapseProcess",
    "new_peyvand",
    "new_synapse",
    "shared_secret_registration",
    "synapse_version",
]

BENCH_LOG_LEVEL = "WARNING"


def new_synapse(data_dir: Path) -> SynapseProcess:
    """A federating Synapse in ``data_dir``, configured but not started."""
    return SynapseProcess(data_dir, synapse_python(), log_level=BENCH_LOG_LEVEL)


def new_peyvand(data_dir: Path) -> HomeserverProcess:
    """A federating Peyvand on SQLite in ``data_dir``, configured but not started."""
    return HomeserverProcess("sqlite", data_dir, federation=True)


def synapse_version() -> str:
    """The version of the Synapse that ``new_synapse`` runs."""
    result = subprocess.run(
        [str(synapse_python()), "-c",
         "import importlib.metadata as m; print(m.version('matrix-synapse'))"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return result.stdout.strip() or "unknown"
