"""Start and stop the two homeservers, fresh each time, on 127.0.0.1.

- ``PeyvandServer``: ``peyvand generate-config`` (open registration, no rate limits), then
  ``peyvand serve``, from the Python running the bench (the project's venv).
- ``SynapseServer``: Synapse from PyPI in its own venv (``bench/.synapse-venv``, installed
  by ``ensure_synapse`` when missing), with a config written here: SQLite or PostgreSQL,
  every ``rc_*`` rate limit raised out of reach, open registration without verification,
  presence and caches at their defaults, logging at WARNING, no federation listener.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO
from urllib.parse import urlparse

from bench.cpus import CpuSplit

BENCH_DIR = Path(__file__).resolve().parent
SYNAPSE_VENV = BENCH_DIR / ".synapse-venv"
SYNAPSE_REQUIREMENT = "matrix-synapse==1.163.2"
PSYCOPG_REQUIREMENT = "psycopg2-binary>=2.9"
SERVER_NAME = "localhost"
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 30.0
INSTALL_TIMEOUT_SECONDS = 600.0

# Every rate limiter Synapse has, raised so that none applies (its defaults would throttle
# the bench's very first seconds). Keys as in Synapse's config/ratelimiting.py.
_UNLIMITED = {"per_second": 1_000_000, "burst_count": 1_000_000}
_SYNAPSE_RATE_LIMITS = {
    "rc_message": _UNLIMITED,
    "rc_registration": _UNLIMITED,
    "rc_registration_token_validity": _UNLIMITED,
    "rc_login": {"address": _UNLIMITED, "account": _UNLIMITED, "failed_attempts": _UNLIMITED},
    "rc_admin_redaction": _UNLIMITED,
    "rc_joins": {"local": _UNLIMITED, "remote": _UNLIMITED},
    "rc_joins_per_room": _UNLIMITED,
    "rc_key_requests": _UNLIMITED,
    "rc_3pid_validation": _UNLIMITED,
    "rc_invites": {"per_room": _UNLIMITED, "per_user": _UNLIMITED, "per_issuer": _UNLIMITED},
    "rc_third_party_invite": _UNLIMITED,
    "rc_media_create": _UNLIMITED,
    "rc_presence": {"per_user": _UNLIMITED},
    "rc_delayed_event_mgmt": _UNLIMITED,
    "rc_room_creation": _UNLIMITED,
    "rc_reports": _UNLIMITED,
    "rc_user_directory": _UNLIMITED,
    "rc_profile": _UNLIMITED,
    "rc_federation": {"window_size": 1000, "sleep_limit": 1_000_000, "reject_limit": 1_000_000},
}


class ServerError(RuntimeError):
    """A server did not install, start or stop; the message carries its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """A homeserver child process: ``start``, ``stop``, ``pid``, ``base_url``."""

    name = "server"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        # Set before ``start``: the server runs on ``cpus.server`` (``bench.cpus``).
        self.cpus: CpuSplit | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise ServerError(f"{self.name} is not running")
        return self._process.pid

    @property
    def pids(self) -> list[int]:
        """The roots of every process tree the server runs as (CPU and memory are summed
        over them)."""
        return [self.pid]

    def version(self) -> str:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        """Start the process and wait until GET /_matrix/client/versions answers 200."""
        self._log = self.log_path.open("ab")
        command = self.command()
        self._process = subprocess.Popen(
            self.cpus.taskset(command) if self.cpus is not None else command,
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        url = f"{self.base_url}/_matrix/client/versions"
        while True:
            if self._process.poll() is not None:
                raise ServerError(
                    f"{self.name} exited ({self._process.returncode}):\n{self.tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"{self.name} did not answer {url}:\n{self.tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited in time."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class PeyvandServer(Server):
    name = "peyvand"

    def __init__(
        self, data_dir: Path, database_url: str | None = None, bcrypt_rounds: int | None = None
    ) -> None:
        """``bcrypt_rounds``: the password-hashing cost (``registration.bcrypt_rounds``),
        lowered where only set-up registers users; the default config's otherwise."""
        super().__init__(data_dir)
        command = [
            sys.executable, "-m", "peyvand", "generate-config",
            "--server-name", SERVER_NAME, "--data-dir", str(data_dir),
            "--port", str(self.port), "--open-registration", "--no-rate-limits",
        ]  # fmt: skip
        if database_url is not None:
            command += ["--database-url", database_url]
        _run(command, "peyvand generate-config")
        self.config_path = data_dir / "peyvand.toml"
        if bcrypt_rounds is not None:
            text = self.config_path.read_text(encoding="utf-8")
            text, count = re.subn(
                r"^bcrypt_rounds = \d+$", f"bcrypt_rounds = {bcrypt_rounds}", text, flags=re.M
            )
            if count != 1:
                raise RuntimeError("the generated config has no bcrypt_rounds line")
            self.config_path.write_text(text, encoding="utf-8")

    def command(self) -> list[str]:
        return [sys.executable, "-m", "peyvand", "serve", "--config", str(self.config_path)]

    def version(self) -> str:
        from importlib.metadata import version

        return version("peyvand")


class PeyvandDeployment(PeyvandServer):
    """``writers`` event writers sharing the rooms on one PostgreSQL database (issue 21),
    behind a real nginx (``base_url`` is nginx's): the first writer has every other role
    too, each writer also serves client reads; started by ``peyvand deployment run``. CPU
    and memory are the processes' and nginx's together."""

    name = "peyvand-workers"

    def __init__(self, data_dir: Path, database_url: str | None, writers: int = 2) -> None:
        if database_url is None:
            raise ServerError("a deployment needs PostgreSQL (--postgres)")
        super().__init__(data_dir, database_url)
        (data_dir / "workers.secret").write_text(secrets.token_hex(32), encoding="utf-8")
        others = ["federation_inbound", "federation_sender", "media", "background"]
        instances = ", ".join(
            f'{{name = "writer{index}", roles = {json.dumps(roles)}, port = {free_port()}}}'
            for index, roles in enumerate(
                [["event_writer", "client_reader", *others]]
                + [["event_writer", "client_reader"]] * (writers - 1),
                start=1,
            )
        )
        text = self.config_path.read_text(encoding="utf-8")
        text, found = re.subn(r"^instances = \[\]$", f"instances = [{instances}]", text, flags=re.M)
        text, secret = re.subn(
            r'^# secret_path = "workers.secret"$',
            'secret_path = "workers.secret"',
            text,
            flags=re.M,
        )
        if (found, secret) != (1, 1):
            raise ServerError("the generated config has no [workers] instances or secret_path")
        self.config_path.write_text(text, encoding="utf-8")
        sys.path.insert(0, str(BENCH_DIR.parent / "tests"))  # the test harness's nginx
        from harness.nginx import Nginx

        self._nginx = Nginx(self.config_path, data_dir / "nginx")
        self.base_url = self._nginx.base_url

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "peyvand", "deployment", "run", "--config", str(self.config_path)
        ]  # fmt: skip

    @property
    def pids(self) -> list[int]:
        return [self.pid, self._nginx.pid]

    def start(self) -> None:
        self._nginx.start()
        try:
            super().start()
        except BaseException:
            self._nginx.stop()
            raise

    def stop(self) -> None:
        super().stop()
        self._nginx.stop()


class SynapseServer(Server):
    name = "synapse"

    def __init__(
        self,
        data_dir: Path,
        database_url: str | None = None,
        extra_config: Mapping[str, object] | None = None,
    ) -> None:
        """``extra_config``: top-level keys added to (or replacing) the config below."""
        super().__init__(data_dir)
        self.config_path = data_dir / "homeserver.yaml"
        log_config = data_dir / "log.yaml"
        log_config.write_text(json.dumps(_synapse_log_config(data_dir / "homeserver.log")))
        config = {
            "server_name": SERVER_NAME,
            "pid_file": str(data_dir / "homeserver.pid"),
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": _synapse_database(data_dir, database_url),
            "log_config": str(log_config),
            "media_store_path": str(data_dir / "media"),
            "signing_key_path": str(data_dir / "signing.key"),
            "report_stats": False,
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "macaroon_secret_key": secrets.token_hex(32),
            "form_secret": secrets.token_hex(32),
            "registration_shared_secret": secrets.token_hex(32),
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            **_SYNAPSE_RATE_LIMITS,
            **(extra_config or {}),
        }
        # JSON is YAML: no YAML library needed on our side.
        self.config_path.write_text(json.dumps(config, indent=2))
        _run([*self._python(), "--config-path", str(self.config_path), "--generate-keys"],
             "synapse --generate-keys")  # fmt: skip

    @staticmethod
    def _python() -> list[str]:
        return [str(SYNAPSE_VENV / "bin" / "python"), "-m", "synapse.app.homeserver"]

    def command(self) -> list[str]:
        return [*self._python(), "--config-path", str(self.config_path)]

    def version(self) -> str:
        result = subprocess.run(
            [str(SYNAPSE_VENV / "bin" / "python"), "-c",
             "import importlib.metadata as m; print(m.version('matrix-synapse'))"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        return result.stdout.strip() or "unknown"


def _synapse_database(data_dir: Path, database_url: str | None) -> dict[str, object]:
    if database_url is None:
        return {"name": "sqlite3", "args": {"database": str(data_dir / "homeserver.db")}}
    url = urlparse(database_url)
    return {
        "name": "psycopg2",
        "args": {
            "user": url.username,
            "host": url.hostname,
            "port": url.port,
            "database": url.path.lstrip("/"),
            "cp_min": 5,
            "cp_max": 10,
        },
    }


def _synapse_log_config(path: Path) -> dict[str, object]:
    return {
        "version": 1,
        "formatters": {"precise": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
        "handlers": {
            "file": {"class": "logging.FileHandler", "formatter": "precise", "filename": str(path)}
        },
        "root": {"level": "WARNING", "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


def ensure_synapse() -> None:
    """Create ``bench/.synapse-venv`` and install Synapse from PyPI if it is not there."""
    python = SYNAPSE_VENV / "bin" / "python"
    probe = [str(python), "-c", "import synapse.app.homeserver, psycopg2"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return
    print(f"installing {SYNAPSE_REQUIREMENT} into {SYNAPSE_VENV}", file=sys.stderr)
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(SYNAPSE_VENV)], "python -m venv")
    _run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         SYNAPSE_REQUIREMENT, PSYCOPG_REQUIREMENT],
        "pip install matrix-synapse",
        timeout=INSTALL_TIMEOUT_SECONDS,
    )  # fmt: skip


def _run(command: list[str], what: str, timeout: float = 120.0) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise ServerError(f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
