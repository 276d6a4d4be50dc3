"""Strict config loading: errors name the key; relative paths follow the config file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from peyvand.config.loader import ConfigError, load_config, render_config
from peyvand.config.model import Config, DatabaseConfig, RateLimitConfig, RegistrationConfig
from peyvand.types import ServerName

MINIMAL = """
server_name = "example.org"
data_dir = "data"
signing_key_path = "data/signing.key"

[database]
url = "sqlite:///data/homeserver.db"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "etc" / "peyvand.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_minimal_config_gets_defaults_and_resolved_paths(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    etc = (tmp_path / "etc").resolve()
    assert config.data_dir == etc / "data"
    assert config.signing_key_path == etc / "data" / "signing.key"
    assert config.database.url == f"sqlite:///{etc}/data/homeserver.db"
    assert config.database.sqlite_path == f"{etc}/data/homeserver.db"
    assert (config.bind, config.port, config.public_baseurl) == ("127.0.0.1", 8008, None)
    assert config.registration == RegistrationConfig()
    assert config.rate_limits == RateLimitConfig()


def test_render_then_load_round_trips(tmp_path: Path) -> None:
    config = Config(
        server_name=ServerName("example.org"),
        data_dir=tmp_path,
        signing_key_path=tmp_path / "keys" / "signing.key",
        database=DatabaseConfig("postgresql://peyvand@127.0.0.1:5432/peyvand"),
        public_baseurl="https://matrix.example.org/",
        registration=RegistrationConfig(open=False, tokens=('tok"en', "ünï")),
        rate_limits=RateLimitConfig(per_second=2.5, burst=3),
        log_level="DEBUG",
    )
    path = tmp_path / "peyvand.toml"
    path.write_text(render_config(config, config_path=path))
    assert load_config(path) == config


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("prot = 8008", "unknown key 'prot'"),
        ("server_name = 'bad name'", "'server_name' is not a valid server name"),
        ("server_name = 'example.org:port'", "'server_name' is not a valid server name"),
        ("port = '8008'", "'port' must be an integer"),
        ("port = 70000", "'port' must be between 1 and 65535"),
        ("port = true", "'port' must be an integer"),
        ("log_level = 'LOUD'", "'log_level' must be one of"),
        ("public_baseurl = 'matrix.example.org'", "'public_baseurl' must start with http"),
        ("[registration]\nopen = 'yes'", "'registration.open' must be true or false"),
        ("[registration]\ntokens = 'abc'", "'registration.tokens' must be a list"),
        ("[registration]\ntokens = [1]", "'registration.tokens[0]' must be a string"),
        ("[registration]\nbcrypt_rounds = 3", "'registration.bcrypt_rounds' must be between 4"),
        ("[registration]\nbcrypt_rounds = 32", "'registration.bcrypt_rounds' must be between 4"),
        ("[rate_limits]\nburst = 1.5", "'rate_limits.burst' must be an integer"),
        ("[rate_limits]\nper_second = 0", "'rate_limits.per_second' must be positive"),
        ("[rate_limits]\nper_second = nan", "'rate_limits.per_second' must be a finite number"),
        ("[rate_limits]\nextra = 1", "unknown key 'rate_limits.extra'"),
        ("rate_limits = 3", "'rate_limits' must be a table"),
        ("[retention]\npurge_batch_size = 0", "'retention.purge_batch_size' must be positive"),
        ("[retention]\npurge_batch_size = 5001", "'retention.purge_batch_size' must be at most"),
        ("[retention]\ndefault_max_lifetime = -1", "'retention.default_max_lifetime' must be"),
        (
            "[retention]\nallowed_lifetime_min = 10\nallowed_lifetime_max = 5",
            "'retention.allowed_lifetime_min' is above 'allowed_lifetime_max'",
        ),
        ("[disappearing]\nmin_timer = 0", "'disappearing.min_timer' must be positive"),
        (
            "[sliding_sync]\nmax_timeline_events = 0",
            "'sliding_sync.max_timeline_events' must be positive",
        ),
        (
            "[disappearing]\nmin_timer = 20\nmax_timer = 10",
            "'disappearing.min_timer' is above 'disappearing.max_timer'",
        ),
        ("[moderation]\npolicy_rooms = ['room']", "'moderation.policy_rooms[0]' must be a room"),
        ("[moderation]\npolicy_user = 'Bad User'", "'moderation.policy_user' is not a valid"),
        ("[http]\ntrusted_proxies = ['nginx']", "'http.trusted_proxies' has an invalid network"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, extra: str, message: str) -> None:
    top, _, table = extra.partition("[")
    minimal = MINIMAL if "server_name" not in top else MINIMAL.replace("server_name =", "#")
    text = top + "\n" + minimal + ("\n[" + table if table else "")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize("name", ["localhost", "example.org:8448", "1.2.3.4", "[::1]:8008"])
def test_valid_server_names(tmp_path: Path, name: str) -> None:
    text = MINIMAL.replace('"example.org"', f'"{name}"')
    assert load_config(write(tmp_path, text)).server_name == name


def test_missing_required_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing required key 'server_name'"):
        load_config(write(tmp_path, MINIMAL.replace('server_name = "example.org"', "")))
    with pytest.raises(ConfigError, match=re.escape("missing required key 'database.url'")):
        load_config(write(tmp_path, MINIMAL.replace('url = "sqlite:///data/homeserver.db"', "")))


def test_bad_database_url_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("'database.url' must start with")):
        load_config(write(tmp_path, MINIMAL.replace("sqlite:///", "mysql://")))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "server_name = "))
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml")
