"""Child processes of the test harness (Peyvand, Synapse, Sygnal): started with stdout
and stderr appended to a log file, stopped with SIGTERM and, when that takes too long,
SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO

# Variables of this interpreter's environment that would lead another Python astray
# (a child started from its own venv).
PYTHON_ENVIRONMENT = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")


def environment_without(names: Iterable[str]) -> dict[str, str]:
    """This process's environment without ``names``."""
    dropped = set(names)
    return {key: value for key, value in os.environ.items() if key not in dropped}


def start_logged(
    what: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """Start ``argv`` with stdout and stderr appended to ``log_path`` after a line naming
    ``what`` and the time; the caller closes the log file once the process is gone."""
    log_file = log_path.open("ab")
    log_file.write(f"--- starting {what} at {time.ctime()}\n".encode())
    log_file.flush()
    process = subprocess.Popen(
        list(argv),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )
    return process, log_file


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Graceful stop (SIGTERM); SIGKILL if it has not exited within ``timeout`` seconds."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def kill_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL: no shutdown code runs, like a crash."""
    if process is not None:
        process.kill()
        process.wait()
