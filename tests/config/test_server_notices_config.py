"""The [server_notices] table: off by default, loaded, checked, and rendered back."""

from __future__ import annotations

from pathlib import Path

import pytest

from peyvand.config.loader import ConfigError, load_config, render_config
from peyvand.config.model import Config

MINIMAL = """
server_name = "example.org"
data_dir = "data"
signing_key_path = "data/signing.key"

[database]
url = "sqlite:///data/homeserver.db"
"""

CONFIGURED = """
[server_notices]
system_mxid_localpart = "notices"
system_mxid_display_name = "Operator"
room_name = "Notices"
room_topic = "From the operator"
auto_join = true
"""


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "peyvand.toml"
    path.write_text(MINIMAL + text)
    return load_config(path)


def test_server_notices_are_off_by_default(tmp_path: Path) -> None:
    notices = load(tmp_path, "").server_notices
    assert not notices.enabled
    assert notices.room_name == "Server Notices"


def test_server_notices_load_and_render_back(tmp_path: Path) -> None:
    config = load(tmp_path, CONFIGURED)
    notices = config.server_notices
    assert notices.enabled
    assert notices.system_mxid_localpart == "notices"
    assert notices.system_mxid_display_name == "Operator"
    assert (notices.room_name, notices.room_topic, notices.auto_join) == (
        "Notices",
        "From the operator",
        True,
    )
    rendered = tmp_path / "rendered.toml"
    rendered.write_text(render_config(config, config_path=rendered))
    assert load_config(rendered).server_notices == notices


@pytest.mark.parametrize("localpart", ["Notices", "no tices", "", "@notices"])
def test_an_invalid_localpart_is_refused(tmp_path: Path, localpart: str) -> None:
    with pytest.raises(ConfigError, match=r"server_notices\.system_mxid_localpart"):
        load(tmp_path, f'[server_notices]\nsystem_mxid_localpart = "{localpart}"\n')
