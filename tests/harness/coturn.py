"""A real TURN server (Debian's coturn) on loopback, for the calls tests.

``CoturnProcess(data_dir, secret)`` runs ``turnserver`` with ``use-auth-secret``: it takes
the time-limited credentials of the TURN REST API scheme computed with ``secret``, on
127.0.0.1 only (listening and relaying), without TLS or its telnet CLI, logging to a file.
``allocate(username, password)`` runs ``turnutils_uclient``, which allocates a relay with
those credentials and sends a few packets through it. ``find_coturn()`` raises
``CoturnUnavailable`` when coturn is not installed (``scripts/test`` installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from harness.ports import free_port
from harness.processes import start_logged, stop_process

START_TIMEOUT_SECONDS = 10.0
ALLOCATE_TIMEOUT_SECONDS = 20.0
REALM = "peyvand.test"


class CoturnUnavailable(RuntimeError):
    """``turnserver`` or ``turnutils_uclient`` is not installed (apt: coturn)."""


class CoturnError(RuntimeError):
    """The TURN server did not start; the message carries its log."""


def find_coturn() -> Path:
    """The directory holding ``turnserver`` and ``turnutils_uclient``."""
    server, client = shutil.which("turnserver"), shutil.which("turnutils_uclient")
    if server is None or client is None:
        raise CoturnUnavailable("coturn is not installed (apt-get install coturn)")
    return Path(server).parent


@dataclass(frozen=True, slots=True)
class Allocation:
    succeeded: bool
    output: str


class CoturnProcess:
    def __init__(self, data_dir: Path, secret: str) -> None:
        self.bin_dir = find_coturn()
        self.port = free_port()
        self.log_path = data_dir / "turnserver.log"
        self._secret = secret
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def start(self) -> None:
        """Start ``turnserver`` and wait until it accepts connections on its port."""
        self._process, self._log_file = start_logged(
            "turnserver",
            [
                str(self.bin_dir / "turnserver"), "--no-stdout-log", "-n",
                "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
                f"--listening-port={self.port}", "--use-auth-secret",
                f"--static-auth-secret={self._secret}", f"--realm={REALM}",
                "--no-cli", "--no-tls", "--no-dtls", "--allow-loopback-peers",
                f"--log-file={self.log_path}", "--simple-log",
            ],
            self.log_path.with_suffix(".out"),
            env=os.environ,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not _accepts(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise CoturnError(f"turnserver did not start:\n{self.log()}")
            time.sleep(0.1)

    def stop(self) -> None:
        stop_process(self._process, 10.0)
        self._process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log(self) -> str:
        logs = (self.log_path, self.log_path.with_suffix(".out"))
        return "".join(path.read_text(errors="replace") for path in logs if path.exists())

    def allocate(self, username: str, password: str) -> Allocation:
        """``turnutils_uclient`` allocates a relay (client-to-client over it, one message)
        with these credentials; it exits 0 only when the allocation succeeded."""
        command = [
            str(self.bin_dir / "turnutils_uclient"), "-y", "-n", "1",
            "-u", username, "-w", password, "-p", str(self.port), "127.0.0.1",
        ]  # fmt: skip
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=ALLOCATE_TIMEOUT_SECONDS, check=False
        )
        return Allocation(result.returncode == 0, result.stdout + result.stderr)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
