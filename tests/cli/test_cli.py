"""The ``peyvand`` command: generate-config, register-user and bad usage, as an operator
runs them (``python -m peyvand`` in a child process)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import ssl
import stat
import subprocess
import sys
import time
import tomllib
import typing
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509

from harness.client import MatrixClient, unique_localpart
from harness.ports import free_port
from harness.server import HomeserverProcess
from peyvand.config.loader import load_config
from peyvand.config.model import Config
from peyvand.events.signing import parse_signing_keys
from peyvand.federation.tls import server_ssl_context

DOCS_CONFIG = Path(__file__).parents[2] / "docs" / "config.md"


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


def test_generate_config_for_a_test_network(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = peyvand(
        "generate-config", "--server-name", "localhost", "--data-dir", data_dir,
        "--federation-port", "8449", "--test-network",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "note:" not in result.stdout

    config = load_config(data_dir / "peyvand.toml")
    assert config.server_name == "localhost:8449"  # the port is part of the name unless 8448
    federation = config.federation
    assert federation.enabled and federation.test_network
    assert federation.port == 8449
    cert, key = federation.tls_certificate_path, federation.tls_private_key_path
    assert (cert, key) == (data_dir.resolve() / "tls.crt", data_dir.resolve() / "tls.key")
    assert cert is not None and key is not None
    assert 'tls_certificate_path = "tls.crt"' in (data_dir / "peyvand.toml").read_text()
    server_ssl_context(cert, key)  # a matching certificate and key
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    names = (
        x509.load_pem_x509_certificate(cert.read_bytes())
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]

    # Regenerating keeps the certificate, as it keeps the signing key.
    before = cert.read_bytes()
    again = peyvand(
        "generate-config", "--server-name", "localhost", "--data-dir", data_dir,
        "--federation-port", "8449", "--test-network", "--force",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert cert.read_bytes() == before


def test_generate_config_with_a_federation_port_outside_test_networks(tmp_path: Path) -> None:
    result = peyvand(
        "generate-config", "--server-name", "example.org", "--data-dir", tmp_path,
        "--federation-port", "8448",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = load_config(tmp_path / "peyvand.toml")
    assert config.server_name == "example.org"  # 8448 is the default port: not in the name
    assert config.federation.enabled and config.federation.port == 8448
    assert not config.federation.test_network
    assert config.federation.tls_certificate_path == tmp_path.resolve() / "tls.crt"
    assert not (tmp_path / "tls.crt").exists()  # the operator must provide a real one
    assert "note:" in result.stdout and str(tmp_path.resolve() / "tls.crt") in result.stdout

    other = peyvand(
        "generate-config", "--server-name", "example.org:443", "--data-dir", tmp_path / "b",
        "--federation-port", "8449",
    )  # fmt: skip
    assert other.returncode == 0, other.stderr
    assert load_config(tmp_path / "b" / "peyvand.toml").server_name == "example.org:443"


def test_serve_answers_on_the_federation_port_over_https(tmp_path: Path) -> None:
    port, federation_port = free_port(), free_port()
    result = peyvand(
        "generate-config", "--server-name", "localhost", "--data-dir", tmp_path,
        "--port", str(port), "--federation-port", str(federation_port), "--test-network",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "peyvand", "serve", "--config", tmp_path / "peyvand.toml"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        context = ssl.create_default_context(cafile=tmp_path / "tls.crt")  # trust it alone
        url = f"https://localhost:{federation_port}/_matrix/client/versions"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                with urllib.request.urlopen(url, timeout=5, context=context) as response:
                    assert response.status == 200
                    assert "versions" in json.load(response)
                    break
            except (urllib.error.URLError, ConnectionError) as exc:
                if isinstance(getattr(exc, "reason", None), ssl.SSLError):
                    raise
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
        plain = f"http://127.0.0.1:{port}/_matrix/client/versions"
        with urllib.request.urlopen(plain, timeout=5) as response:  # the client port still
            assert response.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_serve_without_the_certificate_exits_1(tmp_path: Path) -> None:
    result = peyvand(
        "generate-config", "--server-name", "example.org", "--data-dir", tmp_path,
        "--federation-port", str(free_port()),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    served = peyvand("serve", "--config", tmp_path / "peyvand.toml")
    assert served.returncode == 1
    assert "cannot load the federation TLS certificate" in served.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["no-such-command"],
        ["generate-config", "--data-dir", "/tmp/x"],
        ["generate-config", "--server-name", "x", "--data-dir", "/tmp/x", "--port", "0"],
        ["generate-config", "--server-name", "x", "--data-dir", "/tmp/x", "--port", "http"],
        ["generate-config", "--server-name", "x", "--data-dir", "/tmp/x", "--federation-port", "0"],
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
