"""A real bridge, mautrix-telegram 0.15 from PyPI (installed by ``scripts/test`` into
``<repo>/.bridge-venv``), in a child process on loopback, as the application service of
the bridge tests.

Its config is the package's own example with a test network's values: the homeserver
under test (domain ``localhost``), a loopback listener, an SQLite database, ``localhost``
users allowed to use it, fake Telegram API credentials and no relay bot. It never leaves
the machine: Telegram's data centres are replaced by a loopback port of ours
(``telegram.server``) that only counts the connections made to it
(``telegram_connections()``), proxy variables are dropped, and Telethon logs what it does
(``telethon_lines()``), so a test can check the bridge never tried to reach Telegram.
``generate_registration()`` runs the bridge's own ``-g``, which writes the registration a
homeserver loads and puts its tokens in the config.

Without the venv, ``bridge_python()`` raises ``BridgeUnavailable`` (the fixture skips
locally, fails under CI).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import aiohttp
import yaml

from harness.ports import free_port
from harness.processes import (
    PYTHON_ENVIRONMENT,
    environment_without,
    kill_process,
    start_logged,
    stop_process,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
BRIDGE_VENV = REPO_ROOT / ".bridge-venv"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
GENERATE_TIMEOUT_SECONDS = 60.0
READY_PATH = "/_matrix/mau/ready"
# How a line logged by Telethon (the Telegram client library) starts its logger's name.
TELETHON_LOGGER = "@telethon"
_PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY")


class BridgeUnavailable(RuntimeError):
    """mautrix-telegram is not installed in ``.bridge-venv`` (``scripts/test`` installs it)."""


class BridgeError(RuntimeError):
    """The bridge did not start, or died; the message carries its log."""


def bridge_python() -> Path:
    """The bridge venv's Python, or ``BridgeUnavailable`` if mautrix-telegram is not in it."""
    python = BRIDGE_VENV / "bin" / "python"
    installed = any(BRIDGE_VENV.glob("lib/python*/site-packages/mautrix_telegram/__main__.py"))
    if not python.exists() or not installed:
        raise BridgeUnavailable(
            f"mautrix-telegram is not installed in {BRIDGE_VENV} "
            "(run scripts/test: it installs mautrix-telegram[sqlite]==0.15.3)"
        )
    return python


class MautrixTelegram:
    """One mautrix-telegram: its config, registration, port and (when running) process."""

    def __init__(self, data_dir: Path, homeserver_url: str, domain: str) -> None:
        self.python = bridge_python()
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = data_dir / "config.yaml"
        self.registration_path = data_dir / "registration.yaml"
        self.log_path = data_dir / "bridge.log"
        self.domain = domain
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        # Telegram's stand-in: a listening socket nobody accepts on; connections to it wait
        # in its backlog, where telegram_connections() counts them.
        self._telegram = socket.create_server(("127.0.0.1", 0), backlog=16)
        self._telegram.setblocking(False)
        self._write_config(homeserver_url)
        atexit.register(self.kill)  # a last resort should the fixture's finalizer not run

    @property
    def bot_user_id(self) -> str:
        return f"@{self.config()['appservice']['bot_username']}:{self.domain}"

    def config(self) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        return loaded

    def generate_registration(self) -> Path:
        """Run the bridge's ``-g``: it writes the registration and its tokens in the config."""
        argv = [str(self.python), "-m", "mautrix_telegram", "-g"]
        argv += ["-c", str(self.config_path), "-r", str(self.registration_path)]
        done = subprocess.run(
            argv,
            cwd=self.data_dir,
            env=self._environment(),
            capture_output=True,
            timeout=GENERATE_TIMEOUT_SECONDS,
            check=False,
        )
        if done.returncode != 0 or not self.registration_path.exists():
            raise BridgeError(f"-g exited with {done.returncode}: {done.stdout!r} {done.stderr!r}")
        return self.registration_path

    async def start(self, within: float = START_TIMEOUT_SECONDS) -> None:
        """Start the bridge and wait (``within`` seconds) until it says it is ready."""
        if self.running:
            raise BridgeError("the bridge is already running")
        self._close_log()
        self._process, self._log_file = start_logged(
            "mautrix-telegram",
            [str(self.python), "-m", "mautrix_telegram", "-n", "-c", str(self.config_path)],
            self.log_path,
            cwd=self.data_dir,
            env=self._environment(),
        )
        await self._wait_ready(within)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        stop_process(self._process, STOP_TIMEOUT_SECONDS)
        self._process = None
        self._close_log()

    def kill(self) -> None:
        kill_process(self._process)
        self._process = None
        self._close_log()

    def close(self) -> None:
        """Stop the bridge and close Telegram's stand-in."""
        self.stop()
        self._telegram.close()

    def log(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def telethon_lines(self) -> list[str]:
        """The lines of the log that Telethon wrote."""
        return [line for line in self.log().splitlines() if TELETHON_LOGGER in line]

    def telegram_connections(self) -> int:
        """How many connections were made to the Telegram stand-in (each is closed)."""
        count = 0
        while True:
            try:
                connection, _ = self._telegram.accept()
            except BlockingIOError:
                return count
            connection.close()
            count += 1

    def _environment(self) -> dict[str, str]:
        return environment_without([*PYTHON_ENVIRONMENT, *_PROXY_VARIABLES])

    def _write_config(self, homeserver_url: str) -> None:
        example = next(BRIDGE_VENV.glob("lib/python*/site-packages/mautrix_telegram"))
        config: dict[str, Any] = yaml.safe_load(
            (example / "example-config.yaml").read_text(encoding="utf-8")
        )
        config["homeserver"].update(address=homeserver_url, domain=self.domain)
        appservice = config["appservice"]
        appservice.update(
            address=self.url,
            hostname="127.0.0.1",
            port=self.port,
            database=f"sqlite:///{self.data_dir / 'bridge.db'}",
            bot_avatar="",
        )
        appservice["provisioning"]["enabled"] = False
        config["bridge"]["permissions"] = {"*": "relaybot", self.domain: "full"}
        telegram = config["telegram"]
        # Fake credentials: nothing here may log in to Telegram.
        telegram.update(api_id=20260001, api_hash="0123456789abcdef0123456789abcdef")
        telegram["bot_token"] = "disabled"
        # Every data centre replaced by the stand-in on loopback.
        telegram["server"] = {
            "enabled": True,
            "dc": 2,
            "ip": "127.0.0.1",
            "port": self._telegram.getsockname()[1],
        }
        config["logging"] = {
            "version": 1,
            "formatters": {
                "normal": {"format": "[%(asctime)s] [%(levelname)s@%(name)s] %(message)s"}
            },
            "handlers": {
                "console": {
                    "class": "logging.StreamHandler",
                    "formatter": "normal",
                    "stream": "ext://sys.stdout",
                }
            },
            "loggers": {"mau": {"level": "DEBUG"}, "telethon": {"level": "INFO"}},
            "root": {"level": "DEBUG", "handlers": ["console"]},
        }
        # JSON is YAML (the bridge's ruamel reads it, and -g rewrites it as YAML).
        self.config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")

    async def _wait_ready(self, within: float) -> None:
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self._process is None or self._process.poll() is not None:
                    code = None if self._process is None else self._process.returncode
                    self._process = None
                    self._close_log()
                    raise BridgeError(f"the bridge exited with {code}:\n{self.log()[-20000:]}")
                try:
                    async with session.get(
                        self.url + READY_PATH, timeout=aiohttp.ClientTimeout(total=2)
                    ) as answer:
                        if answer.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.25)
        self.kill()
        raise BridgeError(f"the bridge was not ready within {within} s:\n{self.log()[-20000:]}")

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
