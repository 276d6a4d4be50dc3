"""A real Sygnal (the reference push gateway, vendored in ``../shared/vendor/sygnal`` and
installed by ``scripts/test`` into ``<repo>/.sygnal-venv``) in a child process on loopback.

It serves one ``webpush`` app, ``WEBPUSH_APP_ID``, signed with a VAPID key made here
(py-vapid), whose ``allowed_endpoints`` name only the test's ``WebPushReceiver``. A
Matrix pusher for it is ``kind: http`` with that app ID, the subscription's ``p256dh`` as
pushkey and ``data = {url: notify_url, endpoint, auth}`` (Sygnal's docs/applications.md,
"WebPush"). ``stop()`` and ``start()`` keep the config and port, so a test can take the
gateway away and bring it back at the same URL.

Without the venv, ``sygnal_python()`` raises ``SygnalUnavailable`` (the fixture skips
locally, fails under CI).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import aiohttp
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from py_vapid import Vapid

from harness.ports import free_port
from harness.processes import (
    PYTHON_ENVIRONMENT,
    environment_without,
    kill_process,
    start_logged,
    stop_process,
)
from harness.webpush import WebPushSubscription, b64url

REPO_ROOT = Path(__file__).resolve().parents[2]
SYGNAL_VENV = REPO_ROOT / ".sygnal-venv"
WEBPUSH_APP_ID = "org.peyvand.test.webpush"
NOTIFY_PATH = "/_matrix/push/v1/notify"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
# Sygnal's webpush TTL (seconds a push service keeps an undelivered message).
WEBPUSH_TTL_SECONDS = 120
# Proxy settings of the environment would send Sygnal's requests off the machine.
_PROXY_VARIABLES = {"HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY"}


class SygnalUnavailable(RuntimeError):
    """Sygnal is not installed in ``.sygnal-venv`` (``scripts/test`` installs it)."""


class SygnalError(RuntimeError):
    """Sygnal did not start, or died; the message carries its log."""


def sygnal_python() -> Path:
    """The Sygnal venv's Python, or ``SygnalUnavailable`` if Sygnal is not in it."""
    python = SYGNAL_VENV / "bin" / "python"
    installed = any(SYGNAL_VENV.glob("lib/python*/site-packages/sygnal/webpushpushkin.py"))
    if not python.exists() or not installed:
        raise SygnalUnavailable(
            f"Sygnal is not installed in {SYGNAL_VENV} (run scripts/test: it installs "
            "../shared/vendor/sygnal with the Twisted and pywebpush Sygnal 0.15.1 works with)"
        )
    return python


class SygnalProcess:
    """One Sygnal: its VAPID key, config, port and (when running) process."""

    def __init__(self, data_dir: Path, receiver_netloc: str, python: Path | None = None) -> None:
        """``receiver_netloc``: ``host:port`` of the push service it may post to."""
        self.python = python or sygnal_python()
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.notify_url = self.base_url + NOTIFY_PATH
        self.config_path = data_dir / "sygnal.yaml"
        self.log_path = data_dir / "sygnal.log"
        self.vapid_key_path = data_dir / "vapid_private_key.pem"
        vapid = Vapid()
        vapid.generate_keys()
        vapid.save_key(str(self.vapid_key_path))
        # The application server key a web app subscribes with (uncompressed P-256 point).
        self.application_server_key = b64url(
            vapid.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        )
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._write_config(receiver_netloc)
        atexit.register(self.kill)  # a last resort should the fixture's finalizer not run

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def pusher(self, subscription: WebPushSubscription, **changes: Any) -> dict[str, Any]:
        """The body of ``POST /pushers/set`` for ``subscription`` through this Sygnal;
        ``changes`` replace fields (``data`` is merged)."""
        data = {"url": self.notify_url, "endpoint": subscription.endpoint}
        data["auth"] = subscription.auth
        body: dict[str, Any] = {
            "kind": "http",
            "app_id": WEBPUSH_APP_ID,
            "app_display_name": "Peyvand tests",
            "device_display_name": "a browser",
            "pushkey": subscription.p256dh,
            "lang": "en",
            "data": data | changes.pop("data", {}),
        }
        return body | changes

    async def start(self, within: float = START_TIMEOUT_SECONDS) -> None:
        """Start Sygnal and wait (``within`` seconds) until ``GET /health`` answers."""
        self._spawn()
        await self._wait_ready(within)

    def _spawn(self) -> None:
        if self.running:
            raise SygnalError("Sygnal is already running")
        self._close_log()
        self._process, self._log_file = start_logged(
            "sygnal",
            [str(self.python), "-m", "sygnal.sygnal"],
            self.log_path,
            cwd=self.data_dir,
            env={
                **environment_without([*PYTHON_ENVIRONMENT, *_PROXY_VARIABLES]),
                "SYGNAL_CONF": str(self.config_path),
                # Sygnal exits at import without it (the project moved to another home).
                "RUN_DESPITE_UNSUPPORTED": "Y",
            },
        )

    def stop(self) -> None:
        """Graceful stop (SIGTERM); SIGKILL if it has not exited in time."""
        stop_process(self._process, STOP_TIMEOUT_SECONDS)
        self._process = None
        self._close_log()

    def kill(self) -> None:
        kill_process(self._process)
        self._process = None
        self._close_log()

    def log(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def _write_config(self, receiver_netloc: str) -> None:
        config: dict[str, Any] = {
            "log": {
                "setup": {
                    "version": 1,
                    "formatters": {"normal": {"format": "%(asctime)s %(levelname)s %(message)s"}},
                    "handlers": {
                        "stdout": {
                            "class": "logging.StreamHandler",
                            "formatter": "normal",
                            "stream": "ext://sys.stdout",
                        }
                    },
                    "root": {"handlers": ["stdout"], "level": "INFO"},
                    "disable_existing_loggers": False,
                },
                "access": {"x_forwarded_for": False},
            },
            "http": {"bind_addresses": ["127.0.0.1"], "port": self.port},
            "apps": {
                WEBPUSH_APP_ID: {
                    "type": "webpush",
                    "vapid_private_key": str(self.vapid_key_path),
                    "vapid_contact_email": "push-tests@peyvand.invalid",
                    "allowed_endpoints": [receiver_netloc],
                    "ttl": WEBPUSH_TTL_SECONDS,
                }
            },
        }
        # JSON is YAML: no YAML library needed on our side.
        self.config_path.write_text(json.dumps(config, indent=2))

    async def _wait_ready(self, within: float) -> None:
        deadline = time.monotonic() + within
        url = f"{self.base_url}/health"
        async with aiohttp.ClientSession() as session:
            while True:
                assert self._process is not None
                if self._process.poll() is not None:
                    code = self._process.returncode
                    self._process = None
                    self._close_log()
                    raise SygnalError(f"Sygnal exited with {code}:\n{self.log()[-20000:]}")
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as answer:
                        if answer.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise SygnalError(f"no answer from {url} in {within:.0f} s:\n{self.log()}")
                await asyncio.sleep(0.1)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
