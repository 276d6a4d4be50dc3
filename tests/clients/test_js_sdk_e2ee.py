"""matrix-js-sdk's Rust crypto (tests/clients/js/e2ee.mjs) against Peyvand, issue #4:
encrypted chat both ways, cross-signing bootstrap with password UIA, and a key backup
that a new device restores to decrypt the room's history."""

from __future__ import annotations

import pytest

from harness.client import MatrixClient
from harness.js import run_script
from harness.server import HomeserverProcess

TIMEOUT_SECONDS = 150


@pytest.mark.clients
async def test_js_sdk_e2ee(homeserver: HomeserverProcess, client: MatrixClient) -> None:
    users = (await client.register(), await client.register())
    text = await run_script(
        "e2ee.mjs",
        homeserver,
        users,
        timeout_s=TIMEOUT_SECONDS,
        env={"E2EE_TIMEOUT_MS": str((TIMEOUT_SECONDS - 10) * 1000), "E2EE_WAIT_MS": "30000"},
    )
    for stage in ("stage 1 OK", "stage 2 OK", "stage 3 OK", "e2ee.mjs: OK"):
        assert stage in text, text
