"""``peyvand deployment run`` (issue 21, "Operations"): one command starts a 2-process
deployment on the test PostgreSQL cluster, each process's output prefixed with its name;
both answer /health (bus connected) and export their metrics, the reader its lag behind
the writer; SIGTERM stops them all and the command exits 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from harness.deployment import Deployment

WRITER_ROLES = ["event_writer", "federation_inbound", "federation_sender", "media", "background"]
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 60.0


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_healthy(base_url: str, command: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        assert command.poll() is None, "the command exited"
        try:
            if _get(f"{base_url}/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{base_url} never became healthy")


def _refuses(base_url: str) -> bool:
    try:
        _get(f"{base_url}/health")
    except OSError:
        return True
    return False


def test_run_starts_and_stops_every_process(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    deployment = Deployment(
        request, tmp_path, {"writer": WRITER_ROLES, "reader": ["client_reader"]}
    )
    config = deployment["writer"].config_path
    output = tmp_path / "run.log"
    with output.open("wb") as log:
        command = subprocess.Popen(
            [sys.executable, "-m", "peyvand", "deployment", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        for name in ("writer", "reader"):
            _wait_healthy(deployment[name].base_url, command)
        status, text = _get(f"{deployment['reader'].base_url}/_peyvand/metrics")
        assert status == 200
        assert "peyvand_bus_connected 1.0" in text
        assert "peyvand_events_follower_lag " in text
        status, text = _get(f"{deployment['writer'].base_url}/_peyvand/metrics")
        assert "peyvand_events_writer_position " in text
        assert "peyvand_events_follower_lag" not in text
        command.send_signal(signal.SIGTERM)
        assert command.wait(timeout=STOP_TIMEOUT_SECONDS) == 0
    finally:
        if command.poll() is None:
            command.kill()
            command.wait(timeout=10)
    for name in ("writer", "reader"):
        assert _refuses(deployment[name].base_url), name
    lines = output.read_text(encoding="utf-8", errors="replace").splitlines()
    for name in ("writer", "reader"):
        mine = [line for line in lines if line.startswith(f"{name:<6} | ")]
        assert any("started, pid" in line for line in mine), lines[:20]
        # The process's own log lines, prefixed.
        assert len(mine) >= 3, lines[:20]
        assert mine[-1] == f"{name:<6} | stopped (0)", mine[-3:]
