"""matrix-js-sdk 37's ``SlidingSync`` (tests/clients/js/sliding_sync.mjs) against Peyvand's
simplified sliding sync (MSC4186), on every backend (issue 18): a list of 3 windows over
50 rooms, a new message moving its room to the top, an invite with ``invite_state``
accepted, ``required_state`` with ``$LAZY`` members, and an encrypted conversation whose
keys travel in the ``to_device`` and ``e2ee`` extensions (Rust crypto on both sides), all
on one connection (no ``M_UNKNOWN_POS`` though the SDK aborts and re-sends its long-poll)."""

from __future__ import annotations

import json

import pytest

from harness.client import MatrixClient
from harness.js import run_script
from harness.server import HomeserverProcess

TIMEOUT_SECONDS = 180


@pytest.mark.clients
async def test_js_sdk_sliding_sync(homeserver: HomeserverProcess, client: MatrixClient) -> None:
    users = (await client.register(), await client.register())
    extra = [await client.register(), await client.register()]
    text = await run_script(
        "sliding_sync.mjs",
        homeserver,
        users,
        timeout_s=TIMEOUT_SECONDS,
        env={
            "SLIDING_TIMEOUT_MS": str((TIMEOUT_SECONDS - 10) * 1000),
            "SLIDING_WAIT_MS": "30000",
            "SLIDING_EXTRA_USERS": json.dumps(
                [{"user_id": u.user_id, "access_token": u.access_token} for u in extra]
            ),
        },
    )
    for stage in (
        "stage 1 OK",
        "stage 2 OK",
        "stage 3 OK",
        "stage 4 OK",
        "stage 5 OK",
        "sliding_sync.mjs: OK",
    ):
        assert stage in text, text
