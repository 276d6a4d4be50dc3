"""Run a Node.js script from tests/clients/js (matrix-js-sdk, matrix-bot-sdk) against a
homeserver, bounded in time."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from harness.client import Account
from harness.server import HomeserverProcess

JS_DIR = Path(__file__).parent.parent / "clients" / "js"


def node(package: str = "matrix-js-sdk") -> str:
    """The node binary; skipped locally without node or ``package`` installed, a failure
    under CI."""
    binary = shutil.which("node")
    installed = (JS_DIR / "node_modules" / package).is_dir()
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
    credentials = [part for user in users for part in (user.user_id, user.password)]
    return await run_node(
        script, [homeserver.base_url, *credentials], homeserver, timeout_s=timeout_s, env=env
    )


async def run_node(
    script: str,
    args: list[str],
    homeserver: HomeserverProcess,
    *,
    timeout_s: float,
    env: dict[str, str] | None = None,
) -> str:
    """Run ``script`` with ``args``; its output, or the test fails with that output and
    the server log's tail."""
    process = await asyncio.create_subprocess_exec(
        node(),
        script,
        *args,
        cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
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
