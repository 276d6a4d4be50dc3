"""One throwaway PostgreSQL cluster per test session, from Debian's server binaries.

``initdb`` and ``pg_ctl`` refuse to run as root, so when the tests run as root the server
runs as the ``postgres`` system user (created if missing) through ``runuser``. The cluster
listens on 127.0.0.1 only, with trust authentication, and is deleted when stopped.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness.ports import free_port

SUPERUSER = "postgres"
_COMMAND_TIMEOUT_SECONDS = 120


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (``apt-get install postgresql``)."""


def find_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin``, or where ``initdb`` is on PATH."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if found:
        newest = max(found, key=lambda p: [int(n) for n in re.findall(r"\d+", p)])
        return Path(newest).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise PostgresUnavailable("no initdb found under /usr/lib/postgresql/*/bin or on PATH")


class PostgresCluster:
    """A running cluster; ``create_database`` hands out one database per user of it."""

    def __init__(self, bindir: Path, root: Path, port: int, run_as: str | None) -> None:
        self.bindir = bindir
        self.root = root
        self.port = port
        self._run_as = run_as
        self._databases = 0

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @classmethod
    def start(cls) -> PostgresCluster:
        """initdb a new cluster in a temporary directory and start it."""
        bindir = find_bindir()
        run_as = _server_user() if os.geteuid() == 0 else None
        root = Path(tempfile.mkdtemp(prefix="peyvand-pg-"))
        if run_as is not None:
            entry = pwd.getpwnam(run_as)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        cluster = cls(bindir, root, free_port(), run_as)
        try:
            cluster._server_command(
                "initdb", "-D", str(cluster.data_dir), "-A", "trust", "-U", SUPERUSER,
                "-E", "UTF8", "--no-locale", "--no-sync",
            )  # fmt: skip
            options = (
                f"-c listen_addresses=127.0.0.1 -p {cluster.port} -k {root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200"
            )
            cluster._server_command(
                "pg_ctl", "-D", str(cluster.data_dir), "-l", str(cluster.log_path),
                "-o", options, "-w", "-t", "60", "start",
            )  # fmt: skip
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def dsn(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "peyvand") -> str:
        """Create a new, empty database and return its connection URL."""
        self._databases += 1
        name = f"{prefix}_{self._databases}"
        self._run(
            [str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
             "-U", SUPERUSER, name],
        )  # fmt: skip
        return self.dsn(name)

    def destroy(self) -> None:
        """Stop the server (immediately: its data is thrown away) and delete the cluster."""
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError):
                self._server_command(
                    "pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"
                )
        shutil.rmtree(self.root, ignore_errors=True)

    def _server_command(self, program: str, *args: str) -> None:
        """Run a server binary as the cluster's owner."""
        command = [str(self.bindir / program), *args]
        if self._run_as is not None:
            command = ["runuser", "-u", self._run_as, "--", *command]
        self._run(command)

    def _run(self, command: Sequence[str]) -> None:
        result = subprocess.run(
            command,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT_SECONDS,
            check=False,
        )
        if result.returncode != 0:
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}{log}"
            )


def _server_user() -> str:
    """The system user to run PostgreSQL as when we are root; created if missing."""
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", SUPERUSER],
            check=True,
            timeout=_COMMAND_TIMEOUT_SECONDS,
        )
    return SUPERUSER
