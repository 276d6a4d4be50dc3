"""matrix-js-sdk 37 with server-side threads (tests/clients/js/threads.mjs) through
Peyvand, on every backend (issue 16): a thread replied to from another user, its summary
bundled on the root, per-thread notification counts raised and cleared by a threaded
receipt, an edit the client shows, reactions listed by /relations, and the thread list
from /threads on a new device."""

from __future__ import annotations

import pytest

from harness.client import MatrixClient
from harness.js import run_script
from harness.server import HomeserverProcess

TIMEOUT_SECONDS = 120


@pytest.mark.clients
async def test_js_sdk_threads(homeserver: HomeserverProcess, client: MatrixClient) -> None:
    users = (await client.register(), await client.register())
    text = await run_script(
        "threads.mjs",
        homeserver,
        users,
        timeout_s=TIMEOUT_SECONDS,
        env={"THREADS_TIMEOUT_MS": str((TIMEOUT_SECONDS - 10) * 1000), "THREADS_WAIT_MS": "30000"},
    )
    assert "threads.mjs: OK" in text
