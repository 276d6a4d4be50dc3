"""``peyvand deployment run`` (issue 21, "Operations"): one command starts a 2-process
deployment on the test PostgreSQL cluster, each process's output prefixed with its name;
both answer /health (bus connected) and export their metrics, the reader its lag behind
the writer; the reader's /health says 503 while its bus cannot reconnect, 200 again once
it has; SIGTERM stops them all and the command exits 0. SIGHUP (the terminal closed)
stops them as SIGTERM does, and the command killed outright takes its processes with it;
a process's output line beyond the relay's limit is printed in pieces, not stopping the
relay."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from harness.deployment import WRITER_ROLES, Deployment, cut_bus
from peyvand.cli.deployment_run import LINE_LIMIT_BYTES, _relay

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


def _wait_status(url: str, status: int) -> str:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        answer, text = _get(url)
        if answer == status:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{url} never answered {status}")


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
        reader = deployment["reader"].base_url
        assert deployment.database_url is not None
        asyncio.run(cut_bus(deployment.database_url, "peyvand bus listen reader", allow=False))
        try:
            assert "bus disconnected" in _wait_status(f"{reader}/health", 503)
            assert "peyvand_bus_connected 0.0" in _get(f"{reader}/_peyvand/metrics")[1]
        finally:
            asyncio.run(cut_bus(deployment.database_url, "peyvand bus listen reader", allow=True))
        assert _wait_status(f"{reader}/health", 200) == "OK"
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


_CHATTY_CHILD = """
import sys
print("x" * 200000, flush=True)
for i in range(20000):
    print("line %d " % i + "y" * 100, flush=True)
"""


async def test_a_line_beyond_the_limit_does_not_stop_the_relay(
    capfdbinary: pytest.CaptureFixture[bytes],
) -> None:
    """The process is never left blocked on a full pipe: every line after the long one
    is printed, the long one in pieces of at most the limit, each with the name."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHATTY_CHILD,
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        await asyncio.wait_for(_relay("w", 2, process), timeout=60)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    lines = capfdbinary.readouterr().out.split(b"\n")
    assert lines[-1] == b""
    assert all(line.startswith(b"w  | ") for line in lines[:-1])
    pieces = [line[5:] for line in lines if line.startswith(b"w  | x")]
    assert b"".join(pieces) == b"x" * 200000
    assert max(len(piece) for piece in pieces) <= LINE_LIMIT_BYTES
    assert lines[-2] == b"w  | line 19999 " + b"y" * 100


def _pids(output: Path) -> list[int]:
    text = output.read_text(encoding="utf-8", errors="replace")
    return [int(pid) for pid in re.findall(r"\| started, pid (\d+)$", text, flags=re.M)]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (reaped by no one yet) has stopped too.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    return False


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGKILL], ids=["SIGHUP", "SIGKILL"])
def test_hanging_up_or_killing_the_command_stops_its_processes(
    request: pytest.FixtureRequest, tmp_path: Path, signum: signal.Signals
) -> None:
    deployment = Deployment(request, tmp_path, {"writer": [*WRITER_ROLES, "client_reader"]})
    output = tmp_path / "run.log"
    with output.open("wb") as log:
        command = subprocess.Popen(
            [sys.executable, "-m", "peyvand", "deployment", "run", "--config",
             str(deployment["writer"].config_path)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    pids: list[int] = []
    try:
        _wait_healthy(deployment["writer"].base_url, command)
        pids = _pids(output)
        assert len(pids) == 1
        command.send_signal(signum)
        status = command.wait(timeout=STOP_TIMEOUT_SECONDS)
        assert status == (0 if signum == signal.SIGHUP else -signal.SIGKILL)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while not _gone(pids[0]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _gone(pids[0]), "the server outlived the command"
        assert _refuses(deployment["writer"].base_url)
    finally:
        if command.poll() is None:
            command.kill()
            command.wait(timeout=10)
        for pid in pids:  # never leave an orphaned server behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
