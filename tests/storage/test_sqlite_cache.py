"""The SQLite page cache of each connection: ``database.sqlite_cache_kib``, applied to the
writer and to every reader (``storage/sqlite.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from peyvand.config.loader import ConfigError, load_config
from peyvand.config.model import DatabaseConfig
from peyvand.storage.sqlite import DEFAULT_CACHE_KIB, SqliteDatabase

CONFIG = """
server_name = "example.org"
data_dir = "data"
signing_key_path = "data/signing.key"

[database]
url = "sqlite:///data/homeserver.db"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "peyvand.toml"
    path.write_text(text)
    return path


def test_the_option_defaults_to_the_driver_default_and_is_read(tmp_path: Path) -> None:
    assert DatabaseConfig(url="sqlite:///x.db").sqlite_cache_kib == DEFAULT_CACHE_KIB
    config = load_config(write(tmp_path, CONFIG + "sqlite_cache_kib = 1024\n"))
    assert config.database.sqlite_cache_kib == 1024
    assert config.database.sqlite_path == str((tmp_path / "data" / "homeserver.db").resolve())


@pytest.mark.parametrize("value", ["63", "-1", "'big'"])
def test_a_bad_size_names_the_key(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("'database.sqlite_cache_kib' must")):
        load_config(write(tmp_path, CONFIG + f"sqlite_cache_kib = {value}\n"))


async def test_every_connection_gets_the_cache_size(tmp_path: Path) -> None:
    db = await SqliteDatabase.open(str(tmp_path / "cache.db"), readers=2, cache_kib=128)
    try:
        # Reads go to the readers in turn; a transaction runs on the writer.
        readers = [await db.fetchval("PRAGMA cache_size") for _ in range(2)]
        async with db.transaction() as txn:
            writer = await txn.fetchval("PRAGMA cache_size")
        assert readers == [-128, -128]
        assert writer == -128
    finally:
        await db.close()
