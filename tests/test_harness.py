"""The test harness itself: kill -9 and restart keep the data and the URL; a server that
cannot start fails with its log."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.client import MatrixClient, new_session
from harness.server import HomeserverError, HomeserverProcess


async def test_kill_and_restart_keeps_data_and_base_url(
    private_homeserver: HomeserverProcess,
) -> None:
    async with new_session() as session:
        client = MatrixClient(session, private_homeserver.base_url)
        account = await client.register()
        pid = private_homeserver.pid

        private_homeserver.kill_and_restart()

        assert private_homeserver.pid != pid
        localpart = account.user_id[1:].split(":")[0]
        again = await client.login(localpart, account.password)
        assert again.user_id == account.user_id
        whoami = await client.request("GET", "account/whoami", token=account)
        assert whoami.ok()["user_id"] == account.user_id  # the old token survived too


def test_a_server_that_cannot_start_fails_with_its_log(tmp_path: Path) -> None:
    server = HomeserverProcess("sqlite", tmp_path)
    server.config_path.write_text("bogus_option = 1\n" + server.config_path.read_text())
    with pytest.raises(HomeserverError, match="unknown key 'bogus_option'"):
        server.start(timeout=30)
    assert not server.running
