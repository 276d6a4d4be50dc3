"""matrix-js-sdk (tests/clients/js) logs in, creates a room, invites, joins and chats
through Peyvand, receiving everything through the SDK's own sync loop."""

from __future__ import annotations

import pytest

from harness.client import MatrixClient
from harness.js import run_script
from harness.server import HomeserverProcess

TIMEOUT_SECONDS = 90


@pytest.mark.clients
async def test_js_sdk_chat(homeserver: HomeserverProcess, client: MatrixClient) -> None:
    users = (await client.register(), await client.register())
    text = await run_script(
        "chat.mjs",
        homeserver,
        users,
        timeout_s=TIMEOUT_SECONDS,
        env={"CHAT_TIMEOUT_MS": str((TIMEOUT_SECONDS - 10) * 1000)},
    )
    assert "chat.mjs: OK" in text
