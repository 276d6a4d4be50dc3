"""A real bridge, mautrix-telegram 0.15 from PyPI, attaches to Peyvand (issue 20's
acceptance): Peyvand loads the registration the bridge generated, the bridge starts
without a Telegram account (fake API credentials, loopback only), its bot accepts a
user's invite and answers ``help`` in that management room."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.client import MatrixClient, new_session
from harness.mautrix_bridge import (
    BridgeUnavailable,
    MautrixTelegram,
    bridge_python,
)
from harness.required import require_installed
from harness.rooms import create_room, say
from harness.server import SERVER_NAME, HomeserverProcess, new_homeserver
from harness.sync import sync_until, wait_until_joined

pytestmark = pytest.mark.clients

OVERALL_TIMEOUT_SECONDS = 90
JOIN_ATTEMPTS = 200  # 100 ms apart
# The help command's own line in what ``help`` answers (mautrix.bridge.commands.meta).
HELP_ENTRY = "Show this help message."


@pytest.fixture
def bridged(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[HomeserverProcess, MautrixTelegram]]:
    """Peyvand with the registration mautrix-telegram generated (the bridge not started)."""
    require_installed("mautrix-telegram", bridge_python, BridgeUnavailable)
    (tmp_path / "hs").mkdir()
    server = new_homeserver(backend, request, tmp_path / "hs")
    bridge = MautrixTelegram(tmp_path / "bridge", server.base_url, SERVER_NAME)
    registration = bridge.generate_registration()
    server.configure({"app_service_config_files": json.dumps([str(registration)])})
    server.start()
    try:
        yield server, bridge
    finally:
        bridge.close()
        server.stop()


@pytest.fixture
async def bridge(
    bridged: tuple[HomeserverProcess, MautrixTelegram],
) -> AsyncIterator[MautrixTelegram]:
    running = bridged[1]
    await running.start()
    yield running
    running.stop()


def _bot_help(response: dict[str, Any], room_id: str, bot: str) -> list[dict[str, Any]]:
    """The bot's messages in ``room_id`` in a /sync response that list its commands."""
    room = response.get("rooms", {}).get("join", {}).get(room_id, {})
    return [
        e
        for e in room.get("timeline", {}).get("events", [])
        if e["type"] == "m.room.message"
        and e["sender"] == bot
        and HELP_ENTRY in e["content"].get("body", "")
    ]


async def test_mautrix_telegram_bot_answers_help(
    bridged: tuple[HomeserverProcess, MautrixTelegram], bridge: MautrixTelegram
) -> None:
    server = bridged[0]
    bot = bridge.bot_user_id
    async with asyncio.timeout(OVERALL_TIMEOUT_SECONDS), new_session() as session:
        client = MatrixClient(session, server.base_url)
        user = await client.register()
        since = (await client.request("GET", "sync", token=user)).ok()["next_batch"]

        # The user opens a direct chat with the bridge bot; the bot accepts.
        room_id = await create_room(
            client, user, preset="private_chat", is_direct=True, invite=[bot]
        )
        await wait_until_joined(client, user, room_id, bot, JOIN_ATTEMPTS)

        # In its management room the bot needs no command prefix.
        await say(client, room_id, user, "help")
        response = await sync_until(
            client, user, lambda r: bool(_bot_help(r, room_id, bot)), since=since
        )
        answer = _bot_help(response, room_id, bot)[0]
        assert answer["content"]["msgtype"] == "m.notice"
        # The bridge took the room for the user's management room (a room of two, with its
        # bot), and lists its commands, its own entry among them.
        assert answer["content"]["body"].startswith("This is a management room")
        assert "**help**" in answer["content"]["body"]

    # It never tried to reach Telegram: no account, nothing to connect.
    assert bridge.telegram_connections() == 0
    assert bridge.telethon_lines() == []
