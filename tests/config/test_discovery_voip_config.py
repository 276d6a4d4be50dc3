"""The [well_known] and [voip] tables: loaded, checked, and rendered back by
``render_config`` (support contacts as inline tables)."""

from __future__ import annotations

from pathlib import Path

import pytest

from peyvand.config.loader import ConfigError, load_config, render_config
from peyvand.config.model import Config, SupportContact

MINIMAL = """
server_name = "example.org"
data_dir = "data"
signing_key_path = "data/signing.key"

[database]
url = "sqlite:///data/homeserver.db"
"""

CONFIGURED = """
[well_known]
server = "matrix.example.org:443"
support_page = "https://example.org/help"
support_contacts = [
    {role = "m.role.admin", matrix_id = "@admin:example.org"},
    {role = "m.role.security", email_address = "security@example.org"},
]

[voip]
turn_uris = ["turn:turn.example.org:3478?transport=udp"]
turn_shared_secret = "secret"
turn_user_lifetime = 600
"""


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "peyvand.toml"
    path.write_text(MINIMAL + text)
    return load_config(path)


def test_tables_load_and_render_back(tmp_path: Path) -> None:
    path = tmp_path / "peyvand.toml"
    path.write_text(MINIMAL + CONFIGURED)
    config = load_config(path)
    assert config.well_known.server == "matrix.example.org:443"
    assert config.well_known.support_contacts == (
        SupportContact("m.role.admin", matrix_id="@admin:example.org"),
        SupportContact("m.role.security", email_address="security@example.org"),
    )
    assert config.voip.turn_shared_secret == "secret"
    assert config.voip.turn_user_lifetime == 600
    assert config.voip.turn_allow_guests is True
    path.write_text(render_config(config, config_path=path))
    assert load_config(path) == config


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[well_known]\nserver = "not a name!"', "'well_known.server'"),
        ('[well_known]\nsupport_page = "ftp://x"', "'well_known.support_page'"),
        (
            '[well_known]\nsupport_contacts = [{role = "m.role.admin"}]',
            "needs a matrix_id or an email_address",
        ),
        (
            '[well_known]\nsupport_contacts = [{role = "admin", email_address = "a@b.c"}]',
            "'well_known.support_contacts[0].role'",
        ),
        (
            '[well_known]\nsupport_contacts = [{role = "m.role.admin", matrix_id = "admin"}]',
            "'well_known.support_contacts[0].matrix_id'",
        ),
        ('[voip]\nturn_uris = ["stun:x.org"]', "'voip.turn_uris[0]'"),
        ("[voip]\nturn_user_lifetime = 0", "'voip.turn_user_lifetime'"),
        ('[voip]\nturn_username = "u"', "go together"),
    ],
)
def test_bad_values_are_refused(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(tmp_path, table)
