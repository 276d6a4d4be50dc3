"""Run a matrix-js-sdk script from tests/clients/js against a homeserver, bounded in time."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from harness.client import Account
from harness.server import HomeserverProcess

JS_DIR = Path(__file__).parent.parent / "clients" / "js"


def node() -> str:
    """The node binary; skipped locally without node or the SDK, a failure under CI."""
    binary = shutil.which("node")
    installed = (JS_DIR / "node_modules" / "matrix-js-sdk").is_dir()
    if binary is None or not installed:
        reason = "node or tests/clients/js/node_modules missing (run scripts/test or npm ci)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return binary


async def run_script(
    script: str,
    homeserver: HomeserverProcess,
    users: tuple[Account, Account],
    *,
    timeout_s: float,
    env: dict[str, str],
) -> str:
    """Run ``script`` with the base URL and two users' credentials; its output, or the
    test fails with that output and the server log's tail."""
    process = await asyncio.create_subprocess_exec(
        node(),
        script,
        homeserver.base_url,
        *(part for user in users for part in (user.user_id, user.password)),
        cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **env},
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{script} did not finish in {timeout_s} s\n{homeserver.log()[-5000:]}")
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"{text}\n--- server log (tail)\n{homeserver.log()[-5000:]}"
    return text
