"""The test harness itself: kill -9 and restart keep the data and the URL; a server that
cannot start fails with its log; a wake-up test fails when its request did not wait or was
not woken."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from harness.client import MatrixClient, new_session
from harness.server import HomeserverError, HomeserverProcess
from harness.sync import LongPoll


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


async def test_a_long_poll_answered_before_the_change_fails() -> None:
    async def answered_at_once() -> str:
        return "nothing new"

    poll = await LongPoll.start(answered_at_once(), 10, settle_s=0.01)
    with pytest.raises(AssertionError, match="before the change that should wake it"):
        poll.assert_waiting()


async def test_a_long_poll_not_woken_within_half_its_timeout_fails() -> None:
    poll = await LongPoll.start(asyncio.sleep(10, "timed out"), 0.2, settle_s=0.01)
    poll.assert_waiting()
    with pytest.raises(AssertionError, match="not woken"):
        await poll.woken()


async def test_a_woken_long_poll_gives_its_answer() -> None:
    change = asyncio.Event()

    async def request() -> str:
        await change.wait()
        return "news"

    poll = await LongPoll.start(request(), 10, settle_s=0.01)
    poll.assert_waiting()
    change.set()
    assert await poll.woken() == "news"
