"""``peyvand generate-config``: write a documented config file and a signing key."""

from __future__ import annotations

import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

from peyvand.cli.errors import CommandError
from peyvand.config.loader import render_config
from peyvand.config.model import (
    Config,
    DatabaseConfig,
    FederationConfig,
    RateLimitConfig,
    RegistrationConfig,
)
from peyvand.events.signing import format_signing_keys, generate_signing_key
from peyvand.types import ServerName

CONFIG_FILE_NAME = "peyvand.toml"
SIGNING_KEY_FILE_NAME = "signing.key"
SQLITE_FILE_NAME = "homeserver.db"
TLS_CERTIFICATE_FILE_NAME = "tls.crt"
TLS_PRIVATE_KEY_FILE_NAME = "tls.key"
DEFAULT_FEDERATION_PORT = 8448

_KEY_VERSION_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class GenerateOptions:
    """What ``generate-config`` was asked for (its command-line options)."""

    server_name: str
    data_dir: Path
    bind: str = "127.0.0.1"
    port: int = 8008
    database_url: str | None = None
    open_registration: bool = False
    rate_limits: bool = True
    config_path: Path | None = None
    force: bool = False
    # TLS port of the federation listener; enables federation. Unless it is 8448, it is
    # appended to a server name that has no port.
    federation_port: int | None = None
    # FOR TEST NETWORKS ONLY: trust any peer certificate, allow private peer addresses and
    # generate a self-signed certificate.
    test_network: bool = False


def generate_config(options: GenerateOptions) -> Path:
    """Write the config file (and the signing key unless one exists); return the file's path.

    An existing config file is only replaced with ``force``; an existing signing key is
    never replaced, since other servers pin it. With ``test_network`` a self-signed TLS
    certificate is written to DATA_DIR/tls.crt and tls.key, unless both already exist (an
    operator's certificate is never replaced either).
    """
    data_dir = options.data_dir.expanduser().resolve()
    config_path = (options.config_path or data_dir / CONFIG_FILE_NAME).expanduser().resolve()
    if config_path.exists() and not options.force:
        raise CommandError(f"{config_path} already exists; pass --force to overwrite it")
    server_name = options.server_name
    if (
        options.federation_port is not None
        and options.federation_port != DEFAULT_FEDERATION_PORT
        and split_server_name(server_name)[1] is None
    ):
        server_name = f"{server_name}:{options.federation_port}"
    federation = FederationConfig()
    if options.federation_port is not None or options.test_network:
        federation = FederationConfig(
            enabled=options.federation_port is not None,
            port=options.federation_port,
            tls_certificate_path=data_dir / TLS_CERTIFICATE_FILE_NAME,
            tls_private_key_path=data_dir / TLS_PRIVATE_KEY_FILE_NAME,
            test_network=options.test_network,
        )
    config = Config(
        server_name=ServerName(server_name),
        data_dir=data_dir,
        signing_key_path=data_dir / SIGNING_KEY_FILE_NAME,
        database=DatabaseConfig(
            url=options.database_url or f"sqlite:///{data_dir / SQLITE_FILE_NAME}"
        ),
        bind=options.bind,
        port=options.port,
        registration=RegistrationConfig(open=options.open_registration),
        rate_limits=RateLimitConfig(enabled=options.rate_limits),
        federation=federation,
    )
    text = render_config(config, config_path=config_path)
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        config_path.parent.mkdir(parents=True, exist_ok=True)
        if not config.signing_key_path.exists():
            _write_private(config.signing_key_path, _new_signing_key_text())
        if options.test_network:
            _write_test_certificate(config)
        _write_private(config_path, text)
    except OSError as exc:
        raise CommandError(f"cannot write {exc.filename}: {exc.strerror}") from exc
    return config_path


def split_server_name(server_name: str) -> tuple[str, str | None]:
    """(host, port) of a server name; the host of an IPv6 literal without brackets."""
    if server_name.startswith("["):
        host, _, rest = server_name[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    host, colon, port = server_name.partition(":")
    return host, port if colon else None


def _write_test_certificate(config: Config) -> None:
    """A self-signed certificate for the server name's host, localhost and 127.0.0.1."""
    cert_path = config.federation.tls_certificate_path
    key_path = config.federation.tls_private_key_path
    assert cert_path is not None and key_path is not None
    if cert_path.exists() and key_path.exists():
        return
    from peyvand.federation.tls import generate_self_signed  # cryptography: only when needed

    host, _ = split_server_name(config.server_name)
    generate_self_signed(cert_path, key_path, list(dict.fromkeys([host, "localhost", "127.0.0.1"])))


def _new_signing_key_text() -> str:
    """A new key in the signing key file format; versions look like Synapse's (``a_XXXX``)."""
    version = "a_" + "".join(secrets.choice(_KEY_VERSION_ALPHABET) for _ in range(4))
    return format_signing_keys([generate_signing_key(version)])


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` atomically to ``path``, readable by the owner only."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
