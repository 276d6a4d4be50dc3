"""A real Peyvand server in a child process, configured by ``peyvand generate-config``.

``HomeserverProcess.kill_and_restart()`` is the durability helper: SIGKILL (no shutdown
code runs, like a crash or a power cut for the process) and a fresh start on the same
config, data and port, so clients keep the same base URL.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

import pytest

from harness.ports import free_port
from harness.postgres import PostgresCluster
from harness.processes import kill_process, start_logged, stop_process
from peyvand.types import ServerName

SERVER_NAME = ServerName("localhost")
READY_PATH = "_matrix/client/versions"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0


class HomeserverError(RuntimeError):
    """The server did not start, or died; the message carries its log."""


class HomeserverProcess:
    """One Peyvand instance: its config, data directory, port and (when running) process."""

    def __init__(
        self,
        backend: str,
        data_dir: Path,
        database_url: str | None = None,
        *,
        federation: bool = False,
    ) -> None:
        """With ``federation``, the server federates on a test network: server name
        ``127.0.0.1:<federation_port>``, a self-signed certificate, loopback peers."""
        self.backend = backend
        self.data_dir = data_dir
        self.database_url = database_url
        self.port = free_port()
        self.federation_port = free_port() if federation else None
        self.server_name = (
            ServerName(f"127.0.0.1:{self.federation_port}") if federation else SERVER_NAME
        )
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.config_path = data_dir / "peyvand.toml"
        self.log_path = data_dir / "server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        # The deployment's process this one is (``peyvand serve --worker``), if any.
        self.worker: str | None = None
        command = [
            sys.executable, "-m", "peyvand", "generate-config",
            "--server-name", "127.0.0.1" if federation else SERVER_NAME,
            "--data-dir", str(data_dir),
            "--port", str(self.port), "--open-registration", "--no-rate-limits",
        ]  # fmt: skip
        if self.federation_port is not None:
            command += ["--federation-port", str(self.federation_port), "--test-network"]
        if database_url is not None:
            command += ["--database-url", database_url]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise HomeserverError(f"generate-config failed:\n{result.stdout}{result.stderr}")

    def configure(self, options: Mapping[str, str]) -> None:
        """Set options of the generated config (before a start): ``{"section.key": value}``
        with a TOML value, or ``{"key": value}`` for a top-level one; an optional option the
        generated file has commented out is set too."""
        text = self.config_path.read_text(encoding="utf-8")
        for name, value in options.items():
            section, _, key = name.rpartition(".")
            start = text.index(f"\n[{section}]\n") if section else 0
            following = text.find("\n[", start + 1)
            end = following if following != -1 else len(text)
            part, count = re.subn(
                rf"^(# )?{re.escape(key)} = .*$", f"{key} = {value}", text[start:end], flags=re.M
            )
            assert count == 1, f"expected one '{key} =' line in the generated config"
            text = text[:start] + part + text[end:]
        self.config_path.write_text(text, encoding="utf-8")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise HomeserverError("the server is not running")
        return self._process.pid

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Start ``peyvand serve`` and wait until it answers GET /_matrix/client/versions."""
        if self.running:
            raise HomeserverError("the server is already running")
        self._close_log()
        command = [sys.executable, "-m", "peyvand", "serve", "--config", str(self.config_path)]
        if self.worker is not None:
            command += ["--worker", self.worker]
        self._process, self._log_file = start_logged(
            "peyvand serve", command, self.log_path, env=os.environ
        )
        self._wait_ready(timeout)

    def stop(self) -> None:
        """Graceful stop (SIGTERM); SIGKILL if it has not exited in time."""
        stop_process(self._process, STOP_TIMEOUT_SECONDS)
        self._process = None
        self._close_log()

    def kill(self) -> None:
        """SIGKILL the server: no shutdown code runs, like a crash."""
        kill_process(self._process)
        self._process = None
        self._close_log()

    def restart(self) -> None:
        """Graceful stop, then start again on the same data and port."""
        self.stop()
        self.start()

    def kill_and_restart(self) -> None:
        """``kill -9``, then start again on the same data and port."""
        self.kill()
        self.start()

    def log(self) -> str:
        """Everything the server has written to stdout and stderr so far."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.base_url}/{READY_PATH}"
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                self._close_log()
                raise HomeserverError(f"peyvand serve exited with {code}:\n{self.log()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise HomeserverError(f"no answer from {url} in {timeout:.0f} s:\n{self.log()}")
            time.sleep(0.1)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def new_homeserver(
    backend: str, request: pytest.FixtureRequest, data_dir: Path, *, federation: bool = False
) -> HomeserverProcess:
    """A configured, not yet started server on ``backend`` (a fresh database of the
    session's PostgreSQL cluster for "postgres")."""
    database_url = None
    if backend == "postgres":
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        database_url = cluster.create_database()
    return HomeserverProcess(backend, data_dir, database_url, federation=federation)


def start_homeserver(
    backend: str,
    request: pytest.FixtureRequest,
    data_dir: Path,
    *,
    federation: bool = False,
    options: Mapping[str, str] | None = None,
) -> HomeserverProcess:
    """A started server on ``backend`` with ``options`` set (see ``configure``); the
    caller stops it."""
    server = new_homeserver(backend, request, data_dir, federation=federation)
    if options:
        server.configure(options)
    server.start()
    return server


@contextlib.contextmanager
def running_homeserver(
    backend: str,
    request: pytest.FixtureRequest,
    data_dir: Path,
    *,
    federation: bool = False,
    options: Mapping[str, str] | None = None,
) -> Iterator[HomeserverProcess]:
    """``start_homeserver``, stopped when the block ends (for a fixture to yield)."""
    server = start_homeserver(backend, request, data_dir, federation=federation, options=options)
    try:
        yield server
    finally:
        server.stop()
