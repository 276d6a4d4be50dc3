"""``peyvand generate-config``: write a documented config file and a signing key."""

from __future__ import annotations

import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

from peyvand.cli.errors import CommandError
from peyvand.config.loader import render_config
from peyvand.config.model import Config, DatabaseConfig, RateLimitConfig, RegistrationConfig
from peyvand.events.signing import format_signing_keys, generate_signing_key

CONFIG_FILE_NAME = "peyvand.toml"
SIGNING_KEY_FILE_NAME = "signing.key"
SQLITE_FILE_NAME = "homeserver.db"

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


def generate_config(options: GenerateOptions) -> Path:
    """Write the config file (and the signing key unless one exists); return the file's path.

    An existing config file is only replaced with ``force``; an existing signing key is
    never replaced, since other servers pin it.
    """
    data_dir = options.data_dir.expanduser().resolve()
    config_path = (options.config_path or data_dir / CONFIG_FILE_NAME).expanduser().resolve()
    if config_path.exists() and not options.force:
        raise CommandError(f"{config_path} already exists; pass --force to overwrite it")
    config = Config(
        server_name=options.server_name,
        data_dir=data_dir,
        signing_key_path=data_dir / SIGNING_KEY_FILE_NAME,
        database=DatabaseConfig(
            url=options.database_url or f"sqlite:///{data_dir / SQLITE_FILE_NAME}"
        ),
        bind=options.bind,
        port=options.port,
        registration=RegistrationConfig(open=options.open_registration),
        rate_limits=RateLimitConfig(enabled=options.rate_limits),
    )
    text = render_config(config, config_path=config_path)
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        config_path.parent.mkdir(parents=True, exist_ok=True)
        if not config.signing_key_path.exists():
            _write_private(config.signing_key_path, _new_signing_key_text())
        _write_private(config_path, text)
    except OSError as exc:
        raise CommandError(f"cannot write {exc.filename}: {exc.strerror}") from exc
    return config_path


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
