"""The ``peyvand`` command: generate-config, register-user and bad usage, as an operator
runs them (``python -m peyvand`` in a child process)."""

from __future__ import annotations

import dataclasses
import re
import stat
import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import pytest

from harness.client import MatrixClient, unique_localpart
from harness.server import HomeserverProcess
from peyvand.config.loader import load_config
from peyvand.config.model import Config
from peyvand.events.signing import parse_signing_keys

DOCS_CONFIG = Path(__file__).parents[1] / "docs" / "config.md"


def peyvand(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peyvand", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def dotted_options(cls: type = Config, prefix: str = "") -> list[str]:
    """Every option's dotted name (``rate_limits.burst``), tables included."""
    names = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        names.append(prefix + field.name)
        if dataclasses.is_dataclass(hints[field.name]):
            names += dotted_options(hints[field.name], f"{prefix}{field.name}.")
    return names


def test_generate_config_writes_a_config_that_loads(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = peyvand(
        "generate-config", "--server-name", "example.org", "--data-dir", data_dir,
        "--bind", "0.0.0.0", "--port", "8448", "--open-registration", "--no-rate-limits",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    config = load_config(data_dir / "peyvand.toml")
    assert config.server_name == "example.org"
    assert config.data_dir == data_dir.resolve()
    assert (config.bind, config.port) == ("0.0.0.0", 8448)
    assert config.registration.open
    assert not config.rate_limits.enabled
    assert config.database.sqlite_path == str(data_dir.resolve() / "homeserver.db")
    assert config.signing_key_path == data_dir.resolve() / "signing.key"
    keys = parse_signing_keys(config.signing_key_path.read_text())
    assert len(keys) == 1
    assert stat.S_IMODE(config.signing_key_path.stat().st_mode) == 0o600


def test_generate_config_defaults_are_closed(tmp_path: Path) -> None:
    config_path = tmp_path / "etc" / "homeserver.toml"
    result = peyvand(
        "generate-config", "--server-name", "example.org", "--data-dir", tmp_path / "d",
        "--config-path", config_path, "--database-url", "postgresql://u:p@127.0.0.1:5432/db",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = load_config(config_path)
    assert not config.registration.open
    assert config.registration.tokens == ()
    assert config.rate_limits.enabled
    assert (config.bind, config.port) == ("127.0.0.1", 8008)
    assert config.database.url == "postgresql://u:p@127.0.0.1:5432/db"


def test_generated_file_documents_every_option(tmp_path: Path) -> None:
    assert peyvand("generate-config", "--server-name", "x", "--data-dir", tmp_path).returncode == 0
    lines = (tmp_path / "peyvand.toml").read_text().splitlines()
    raw = tomllib.loads("\n".join(lines))
    section = ""
    documented: set[str] = set()
    for index, line in enumerate(lines):
        if line.startswith("["):
            section = line.strip("[]") + "."
            documented.add(line.strip("[]"))
            assert lines[index - 1].startswith("# "), f"table {line} has no comment"
        elif match := re.match(r"^(?:# )?([a-z_]+) = ", line):
            key = match.group(1)
            assert lines[index - 1].startswith("# "), f"{section}{key} has no comment"
            documented.add(section + key)
    expected = set(dotted_options())
    assert documented == expected
    assert set(raw) <= expected  # nothing written that the model does not know


def test_config_reference_documents_every_option() -> None:
    text = DOCS_CONFIG.read_text()
    missing = [
        name
        for name in dotted_options()
        if f"`{name}`" not in text and f"`[{name}]`" not in text  # a table's heading
    ]
    assert not missing, f"docs/config.md does not document {missing}"


def test_generate_config_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    args = ("generate-config", "--server-name", "one", "--data-dir", tmp_path)
    assert peyvand(*args).returncode == 0
    key = (tmp_path / "signing.key").read_text()

    refused = peyvand(*args)
    assert refused.returncode == 1
    assert "already exists" in refused.stderr

    forced = peyvand("generate-config", "--server-name", "two", "--data-dir", tmp_path, "--force")
    assert forced.returncode == 0, forced.stderr
    assert load_config(tmp_path / "peyvand.toml").server_name == "two"
    assert (tmp_path / "signing.key").read_text() == key  # a signing key is never replaced


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["no-such-command"],
        ["generate-config", "--data-dir", "/tmp/x"],
        ["generate-config", "--server-name", "x", "--data-dir", "/tmp/x", "--port", "0"],
        ["generate-config", "--server-name", "x", "--data-dir", "/tmp/x", "--port", "http"],
        ["serve"],
        ["register-user", "--config", "c.toml", "--user", "alice"],
    ],
)
def test_bad_usage_exits_2(args: list[str]) -> None:
    result = peyvand(*args)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_serve_with_a_broken_config_exits_1(tmp_path: Path) -> None:
    missing = peyvand("serve", "--config", tmp_path / "missing.toml")
    assert missing.returncode == 1
    assert "cannot read config file" in missing.stderr

    broken = tmp_path / "broken.toml"
    broken.write_text('server_name = "x"\ndata_dir = "."\nsigning_key_path = "k"\nprot = 1\n')
    result = peyvand("serve", "--config", broken)
    assert result.returncode == 1
    assert "unknown key 'prot'" in result.stderr


async def test_register_user_can_log_in_and_conflicts_fail(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    localpart = unique_localpart("operator")
    password = "a long operator password"
    args = ("register-user", "--config", homeserver.config_path, "--user", localpart)
    result = peyvand(*args, "--password", password, "--admin")
    assert result.returncode == 0, result.stderr
    assert f"@{localpart}:{homeserver.server_name}" in result.stdout

    account = await client.login(localpart, password)
    assert account.user_id == f"@{localpart}:{homeserver.server_name}"

    again = peyvand(*args, "--password", "another password entirely")
    assert again.returncode == 1
    assert localpart in again.stderr
    assert (await client.login(localpart, password)).user_id == account.user_id
