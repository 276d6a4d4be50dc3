"""A real Synapse (from PyPI, in ``<repo>/.synapse-venv``) in a child process on loopback,
configured for a test network, as the peer of the federation tests.

- ``server_name`` is ``127.0.0.1:<federation_port>``: an IP literal with an explicit port,
  so a peer connects straight to it (no ``.well-known``, no SRV); users are
  ``@name:127.0.0.1:<port>``.
- Two listeners on 127.0.0.1: plain HTTP for the client API (``client_url``) and TLS for
  federation and keys (``federation_url``), with a self-signed certificate
  (subjectAltName IP:127.0.0.1, DNS:localhost) made here.
- Test-network settings: it does not verify peers' certificates, may connect to loopback,
  fetches keys from the origin server itself (no notary), retries an unreachable peer
  within seconds rather than minutes, and has every rate limit out of reach.

``scripts/test`` installs Synapse; without it, ``synapse_python()`` raises
``SynapseUnavailable`` (the fixture skips locally, fails under CI).
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import secrets
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from harness.client import DEFAULT_PASSWORD, Account, MatrixClient, new_session, unique_localpart
from harness.ports import free_port
from harness.processes import (
    PYTHON_ENVIRONMENT,
    environment_without,
    kill_process,
    start_logged,
    stop_process,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SYNAPSE_VENV = REPO_ROOT / ".synapse-venv"
READY_PATH = "_matrix/client/versions"
START_TIMEOUT_SECONDS = 90.0  # the first start creates the whole SQLite schema
STOP_TIMEOUT_SECONDS = 20.0
SETUP_TIMEOUT_SECONDS = 60.0

# Every rate limiter Synapse 1.163 reads (synapse/config/ratelimiting.py), out of reach.
_FAST = {"per_second": 1000, "burst_count": 1000}
RATE_LIMITS: dict[str, Any] = {
    "rc_message": _FAST,
    "rc_registration": _FAST,
    "rc_registration_token_validity": _FAST,
    "rc_login": {"address": _FAST, "account": _FAST, "failed_attempts": _FAST},
    "rc_admin_redaction": _FAST,
    "rc_joins": {"local": _FAST, "remote": _FAST},
    "rc_joins_per_room": _FAST,
    "rc_key_requests": _FAST,
    "rc_3pid_validation": _FAST,
    "rc_invites": {"per_room": _FAST, "per_user": _FAST, "per_issuer": _FAST},
    "rc_third_party_invite": _FAST,
    "rc_media_create": _FAST,
    "rc_presence": {"per_user": _FAST},
    "rc_delayed_event_mgmt": _FAST,
    "rc_room_creation": _FAST,
    "rc_reports": _FAST,
    "rc_user_directory": _FAST,
    "rc_profile": _FAST,
    # Inbound federation: requests per origin per window before delaying / rejecting.
    "rc_federation": {
        "window_size": 1000,
        "sleep_limit": 1000,
        "sleep_delay": 500,
        "reject_limit": 1000,
        "concurrent": 100,
    },
    # Read receipts are batched per room to at most this many transactions a second.
    "federation_rr_transactions_per_room_per_second": 1000,
}

# Run by the Synapse venv's Python (cryptography and signedjson are Synapse dependencies):
# a self-signed TLS certificate and key, and an ed25519 signing key; prints the key's ID
# and public half as JSON.
_MAKE_KEYS = """
import datetime, ipaddress, json, secrets, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from signedjson.key import (
    encode_verify_key_base64, generate_signing_key, get_verify_key, write_signing_keys,
)

cert_path, key_path, signing_key_path = sys.argv[1:4]
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
now = datetime.datetime.now(datetime.timezone.utc)
ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
cert = (
    x509.CertificateBuilder()
    .subject_name(name)
    .issuer_name(name)
    .public_key(key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(days=1))
    .not_valid_after(now + datetime.timedelta(days=365))
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .add_extension(ski, critical=False)
    .add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
    )
    .add_extension(
        x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        ),
        critical=False,
    )
    .sign(key, hashes.SHA256())
)
with open(cert_path, "wb") as out:
    out.write(cert.public_bytes(serialization.Encoding.PEM))
with open(key_path, "wb") as out:
    out.write(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
signing_key = generate_signing_key("a_" + secrets.token_hex(2))
with open(signing_key_path, "w") as out:
    write_signing_keys(out, [signing_key])
print(json.dumps({
    "key_id": "ed25519:" + signing_key.version,
    "verify_key": encode_verify_key_base64(get_verify_key(signing_key)),
}))
"""


class SynapseUnavailable(RuntimeError):
    """Synapse is not installed in ``.synapse-venv`` (``scripts/test`` installs it)."""


class SynapseError(RuntimeError):
    """Synapse did not start, or died; the message carries its log."""


def synapse_python() -> Path:
    """The Synapse venv's Python, or ``SynapseUnavailable`` if Synapse is not in it."""
    python = SYNAPSE_VENV / "bin" / "python"
    installed = any(SYNAPSE_VENV.glob("lib/python*/site-packages/synapse/app/homeserver.py"))
    if not python.exists() or not installed:
        raise SynapseUnavailable(
            f"Synapse is not installed in {SYNAPSE_VENV} (run scripts/test, or: python3 -m "
            'venv .synapse-venv && .synapse-venv/bin/pip install "matrix-synapse==1.163.2")'
        )
    return python


def shared_secret_registration(
    secret: str, nonce: str, localpart: str, password: str, *, admin: bool
) -> dict[str, Any]:
    """The body of ``POST /_synapse/admin/v1/register`` (Synapse's shared-secret
    registration): ``nonce`` from a GET of the same path, signed with HMAC-SHA1 under the
    server's ``registration_shared_secret``."""
    role = "admin" if admin else "notadmin"
    message = b"\x00".join(part.encode() for part in (nonce, localpart, password, role))
    mac = hmac.new(secret.encode(), message, hashlib.sha1)
    return {
        "nonce": nonce,
        "username": localpart,
        "password": password,
        "admin": admin,
        "mac": mac.hexdigest(),
    }


class SynapseProcess:
    """One Synapse: its config, keys, data directory, ports and (when running) process.

    Construction writes everything (config, TLS certificate, signing key) but starts
    nothing; ``start()``, ``stop()``, ``kill()`` and ``restart()`` keep the data, the
    keys and the ports, so peers and clients find it again at the same addresses.
    """

    def __init__(
        self, data_dir: Path, python: Path | None = None, *, log_level: str = "INFO"
    ) -> None:
        """``log_level``: of Synapse's log file; INFO (every SQL statement) for tests, WARNING
        where its speed is measured (``bench.federated_join``)."""
        self.python = python or synapse_python()
        self.log_level = log_level
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.client_port = free_port()
        self.federation_port = free_port()
        self.server_name = f"127.0.0.1:{self.federation_port}"
        self.client_url = f"http://127.0.0.1:{self.client_port}"
        self.federation_url = f"https://127.0.0.1:{self.federation_port}"
        self.config_path = data_dir / "homeserver.yaml"
        self.log_path = data_dir / "homeserver.log"  # Synapse's own logging (INFO)
        self.console_path = data_dir / "console.log"  # its stdout and stderr
        self.tls_certificate_path = data_dir / "tls.crt"
        self.tls_private_key_path = data_dir / "tls.key"
        self.signing_key_path = data_dir / "signing.key"
        self.registration_shared_secret = secrets.token_hex(32)
        self._process: subprocess.Popen[bytes] | None = None
        self._console: IO[bytes] | None = None
        keys = self._make_keys()
        self.signing_key_id: str = keys["key_id"]
        self.verify_key_base64: str = keys["verify_key"]
        self._write_config()
        atexit.register(self.kill)  # a last resort should the fixture's finalizer not run

    @property
    def base_url(self) -> str:
        """The client API's URL (the name ``HomeserverProcess`` uses)."""
        return self.client_url

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise SynapseError("Synapse is not running")
        return self._process.pid

    def user_id(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Start Synapse and wait until the client API answers and the TLS federation
        listener completes a handshake."""
        if self.running:
            raise SynapseError("Synapse is already running")
        self._close_console()
        self._process, self._console = start_logged(
            "synapse",
            [str(self.python), "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
            self.console_path,
            cwd=self.data_dir,
            env=environment_without(PYTHON_ENVIRONMENT),
        )
        self._wait_ready(timeout)

    def stop(self) -> None:
        """Graceful stop (SIGTERM); SIGKILL if it has not exited in time."""
        stop_process(self._process, STOP_TIMEOUT_SECONDS)
        self._process = None
        self._close_console()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, like a crash."""
        kill_process(self._process)
        self._process = None
        self._close_console()

    def restart(self) -> None:
        """Graceful stop, then start again on the same data, keys and ports."""
        self.stop()
        self.start()

    def log(self) -> str:
        """Synapse's console output (start-up errors land there) and its log file."""
        parts = []
        for path in (self.console_path, self.log_path):
            if path.exists():
                text = path.read_text(encoding="utf-8", errors="replace")
                if text.strip():
                    parts.append(f"--- {path.name}\n{text}")
        return "\n".join(parts)

    async def register_user(
        self, username: str | None = None, password: str = DEFAULT_PASSWORD, admin: bool = False
    ) -> Account:
        """A new user, logged in: ``m.login.dummy`` registration through the client API,
        or (``admin=True``) the shared-secret admin API, which can make server admins."""
        async with new_session() as session:
            client = MatrixClient(session, self.client_url)
            if not admin:
                return await client.register(username, password)
            localpart = username or unique_localpart()
            path = "/_synapse/admin/v1/register"
            nonce = (await client.request("GET", path)).ok()["nonce"]
            body = shared_secret_registration(
                self.registration_shared_secret, nonce, localpart, password, admin=True
            )
            result = (await client.request("POST", path, json=body)).ok()
            return Account(result["user_id"], result["access_token"], result["device_id"], password)

    def _make_keys(self) -> dict[str, str]:
        result = subprocess.run(
            [str(self.python), "-c", _MAKE_KEYS, str(self.tls_certificate_path),
             str(self.tls_private_key_path), str(self.signing_key_path)],
            capture_output=True, text=True, timeout=SETUP_TIMEOUT_SECONDS, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise SynapseError(f"making Synapse's keys failed:\n{result.stdout}{result.stderr}")
        keys: dict[str, str] = json.loads(result.stdout)
        return keys

    def _write_config(self) -> None:
        log_config = self.data_dir / "log.yaml"
        log_config.write_text(json.dumps(_log_config(self.log_path, self.log_level), indent=2))
        listener = {"bind_addresses": ["127.0.0.1"], "type": "http", "x_forwarded": False}
        config: dict[str, Any] = {
            "server_name": self.server_name,
            "public_baseurl": f"{self.client_url}/",
            "listeners": [
                {
                    **listener,
                    "port": self.client_port,
                    "tls": False,
                    "resources": [{"names": ["client", "media"], "compress": False}],
                },
                {
                    **listener,
                    "port": self.federation_port,
                    "tls": True,
                    "resources": [{"names": ["federation", "keys", "media"], "compress": False}],
                },
            ],
            "tls_certificate_path": str(self.tls_certificate_path),
            "tls_private_key_path": str(self.tls_private_key_path),
            "signing_key_path": str(self.signing_key_path),
            "database": {
                "name": "sqlite3",
                "args": {"database": str(self.data_dir / "homeserver.db")},
            },
            "log_config": str(log_config),
            "media_store_path": str(self.data_dir / "media"),
            "report_stats": False,
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "registration_shared_secret": self.registration_shared_secret,
            "macaroon_secret_key": secrets.token_hex(32),
            "form_secret": secrets.token_hex(32),
            "bcrypt_rounds": 4,  # registration and login in milliseconds, as in Complement
            # --- the test network: loopback peers with self-signed certificates
            # Outbound federation accepts any certificate (Complement trusts its own CA with
            # federation_custom_ca_list instead; we have no CA, only self-signed peers).
            "federation_verify_certificates": False,
            # Outbound requests may go to loopback. The default blocklist holds 127.0.0.0/8
            # and ::1; Synapse always adds 0.0.0.0 and ::. The allowlist wins over it anyway.
            "ip_range_blacklist": [],
            "ip_range_whitelist": ["127.0.0.1", "::1"],
            # Keys come from the origin server itself: no notary (matrix.org by default).
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            # Retry an unreachable peer within seconds: the backoff between attempts at a
            # destination (defaults 10m..7d), and the retries of one transaction (defaults
            # 10 retries, up to 60 s apart, i.e. minutes on one dead peer).
            "federation": {
                "destination_min_retry_interval": "1s",
                "destination_retry_multiplier": 2,
                "destination_max_retry_interval": "10s",
                "max_long_retries": 3,
                "max_long_retry_delay": "2s",
            },
            "allow_public_rooms_over_federation": True,
            # Anyone may publish a room to the directory (the default allows no one).
            "room_list_publication_rules": [{"action": "allow"}],
            "allow_device_name_lookup_over_federation": True,
            "enable_authenticated_media": True,
            "presence": {"enabled": True},
            # An initial /sync right after a change sees it (as in Complement).
            "caches": {"sync_response_cache_duration": 0},
            **RATE_LIMITS,
        }
        # JSON is YAML: no YAML library needed on our side.
        self.config_path.write_text(json.dumps(config, indent=2))

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.client_url}/{READY_PATH}"
        client_ready = tls_ready = False
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                self._close_console()
                raise SynapseError(f"Synapse exited with {code}:\n{self.log()[-20000:]}")
            if not client_ready:
                client_ready = _answers(url)
            if client_ready and not tls_ready:
                tls_ready = _tls_handshake(self.federation_port)
            if client_ready and tls_ready:
                return
            if time.monotonic() > deadline:
                self.kill()
                what = url if not client_ready else f"TLS on port {self.federation_port}"
                raise SynapseError(
                    f"no answer from {what} in {timeout:.0f} s:\n{self.log()[-20000:]}"
                )
            time.sleep(0.1)

    def _close_console(self) -> None:
        if self._console is not None:
            self._console.close()
            self._console = None


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tls_handshake(port: int) -> bool:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=2) as sock,
            context.wrap_socket(sock),
        ):
            return True
    except OSError:
        return False


def _log_config(path: Path, level: str) -> dict[str, Any]:
    """Synapse's default format, to one unbuffered file (its default buffers INFO lines for
    up to 5 s, which a test reading ``log()`` would miss); Synapse fills ``request`` in."""
    return {
        "version": 1,
        "formatters": {
            "precise": {
                "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - "
                "%(request)s - %(message)s"
            }
        },
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "precise",
                "filename": str(path),
                "encoding": "utf8",
            }
        },
        "loggers": {"synapse.storage.SQL": {"level": level}},
        "root": {"level": level, "handlers": ["file"]},
        "disable_existing_loggers": False,
    }
