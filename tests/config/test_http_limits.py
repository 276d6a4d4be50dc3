"""The ``[http]`` request read limits: defaults, accepted values and refused ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from peyvand.config.loader import ConfigError, load_config
from peyvand.config.model import HttpConfig

MINIMAL = """
server_name = "example.org"
data_dir = "data"
signing_key_path = "data/signing.key"

[database]
url = "sqlite:///data/homeserver.db"
"""


def load(tmp_path: Path, http: str = "") -> HttpConfig:
    path = tmp_path / "peyvand.toml"
    path.write_text(MINIMAL + (f"\n[http]\n{http}\n" if http else ""))
    return load_config(path).http


def test_defaults_bound_heads_and_bodies(tmp_path: Path) -> None:
    assert load(tmp_path) == HttpConfig(
        request_header_timeout=20.0, request_body_timeout=60.0, request_body_min_rate=1024
    )


def test_values_are_read(tmp_path: Path) -> None:
    http = load(
        tmp_path,
        "request_header_timeout = 2\nrequest_body_timeout = 0.5\nrequest_body_min_rate = 0",
    )
    assert http == HttpConfig(2.0, 0.5, 0)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("request_header_timeout = 0", "'http.request_header_timeout' must be above 0"),
        ("request_header_timeout = 20000", "'http.request_header_timeout' must be above 0"),
        ("request_body_timeout = -1", "'http.request_body_timeout' must be above 0"),
        ("request_body_timeout = 3600.5", "'http.request_body_timeout' must be above 0"),
        ("request_body_min_rate = -1", "'http.request_body_min_rate' must not be negative"),
        ("request_body_min_rate = 1.5", "'http.request_body_min_rate' must be an integer"),
        ('request_header_timeout = "20"', "'http.request_header_timeout' must be a number"),
        ("header_timeout = 20", "unknown key 'http.header_timeout'"),
    ],
)
def test_bad_values_are_refused_by_name(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, line)
