"""matrix-js-sdk's Rust crypto (tests/clients/js/e2ee.mjs) against Peyvand, issue #4:
encrypted chat both ways, cross-signing bootstrap with password UIA, and a key backup
that a new device restores to decrypt the room's history."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from harness.client import MatrixClient
from harness.server import HomeserverProcess

JS_DIR = Path(__file__).parent / "js"
TIMEOUT_SECONDS = 150


def _node() -> str:
    node = shutil.which("node")
    installed = (JS_DIR / "node_modules" / "matrix-js-sdk").is_dir()
    if node is None or not installed:
        reason = "node or tests/clients/js/node_modules missing (run scripts/test or npm ci)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return node


@pytest.mark.clients
async def test_js_sdk_e2ee(homeserver: HomeserverProcess, client: MatrixClient) -> None:
    node = _node()
    alice = await client.register()
    bob = await client.register()
    process = await asyncio.create_subprocess_exec(
        node,
        "e2ee.mjs",
        homeserver.base_url,
        alice.user_id,
        alice.password,
        bob.user_id,
        bob.password,
        cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={
            **os.environ,
            "E2EE_TIMEOUT_MS": str((TIMEOUT_SECONDS - 10) * 1000),
            "E2EE_WAIT_MS": "30000",
        },
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), TIMEOUT_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"e2ee.mjs did not finish in {TIMEOUT_SECONDS} s\n{homeserver.log()[-5000:]}")
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"{text}\n--- server log (tail)\n{homeserver.log()[-5000:]}"
    for stage in ("stage 1 OK", "stage 2 OK", "stage 3 OK", "e2ee.mjs: OK"):
        assert stage in text, text
