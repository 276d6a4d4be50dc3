"""An encrypted appservice bot on matrix-bot-sdk (npm ``@vector-im/matrix-bot-sdk``, its
``Appservice`` class with encryption on) against Peyvand, issue 20's acceptance: a user on
matrix-js-sdk (Rust crypto) creates an encrypted room, invites the bot, the bot joins, the
user's message reaches the bot in a transaction and the bot decrypts it, and the bot's
encrypted answer is decrypted by the user.

The bot encrypts through the appservice extensions (Application Service API; MSC2409
to-device messages, MSC3202 device lists and one-time key counts in transactions): it has
no sync loop, so the room key the user sends its device arrives only inside a transaction.
tests/clients/js/appservice_bot.mjs is the bot, appservice_user.mjs the user.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.appservice import write_registration
from harness.client import MatrixClient, new_session
from harness.js import JS_DIR, node, run_node
from harness.ports import free_port
from harness.server import SERVER_NAME, HomeserverProcess, running_homeserver

pytestmark = pytest.mark.clients

BOT_SDK = "@vector-im/matrix-bot-sdk"
BOT_LOCALPART = "echobot"
BOT_USER_ID = f"@{BOT_LOCALPART}:{SERVER_NAME}"
READY_TIMEOUT_SECONDS = 60.0
USER_TIMEOUT_SECONDS = 120.0
USER_WAIT_MS = 60_000
# MSC2409 (ephemeral events and to-device messages pushed) and MSC3202 (device lists and
# one-time key counts pushed, device_id masquerading), by the names the bot SDK knows.
UNSTABLE_FLAGS: dict[str, Any] = {
    "de.sorunome.msc2409.push_ephemeral": True,
    "org.matrix.msc3202": True,
}


@dataclass(frozen=True)
class Registration:
    path: Path
    json_path: Path
    port: int


@dataclass
class Bot:
    """The running bot process and every line it printed."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "\n".join(self.lines)

    def requests(self) -> dict[str, str]:
        """The requests the bot made, "METHOD URL" by the SDK's request tag ("(REQ-7)")."""
        made = (line.split(" ", 3) for line in self.lines if line.startswith("REQ (REQ-"))
        return {tag: f"{method} {url}" for _, tag, method, url in made if method.isupper()}

    def failed_requests(self) -> list[str]:
        """The requests the server refused (the SDK logs their error with the tag)."""
        requests = self.requests()
        failed = (line.split(" ")[2] for line in self.lines if line.startswith("ERROR MatrixHttp"))
        return [requests.get(tag, tag) for tag in failed]


@pytest.fixture
def registration(tmp_path: Path) -> Registration:
    """The bot's registration with MSC2409 ephemeral and to-device pushes and MSC3202,
    as YAML for the server and as JSON for the bot."""
    port = free_port()
    path = write_registration(
        tmp_path / "echo-bot.yaml",
        appservice_id="matrix-bot-sdk-echo",
        url=f"http://127.0.0.1:{port}",
        as_token=secrets.token_urlsafe(24),
        hs_token=secrets.token_urlsafe(24),
        sender_localpart=BOT_LOCALPART,
        user_regex=f"@echo_.*:{SERVER_NAME}",
        rate_limited=False,
        **UNSTABLE_FLAGS,
    )
    json_path = tmp_path / "echo-bot.json"
    json_path.write_text(json.dumps(yaml.safe_load(path.read_text(encoding="utf-8"))))
    return Registration(path, json_path, port)


@pytest.fixture
def appservice_homeserver(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, registration: Registration
) -> Iterator[HomeserverProcess]:
    (tmp_path / "hs").mkdir()
    options = {"app_service_config_files": json.dumps([str(registration.path)])}
    with running_homeserver(backend, request, tmp_path / "hs", options=options) as server:
        yield server


@pytest.fixture
async def bot(
    appservice_homeserver: HomeserverProcess, registration: Registration, tmp_path: Path
) -> AsyncIterator[Bot]:
    """The bot, started and ready (its device's keys uploaded); killed at the end."""
    binary = node(BOT_SDK)
    process = await asyncio.create_subprocess_exec(
        binary,
        "appservice_bot.mjs",
        str(registration.json_path),
        appservice_homeserver.base_url,
        SERVER_NAME,
        str(registration.port),
        str(tmp_path / "bot-store"),
        cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(os.environ),
    )
    started = Bot(process)
    reader = asyncio.create_task(_read_lines(started))
    try:
        await _wait_ready(started, appservice_homeserver)
        yield started
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(reader, 5)
        # pytest shows a test's captured output only when it fails.
        print(f"--- bot output\n{started.output()}")


async def _read_lines(bot: Bot) -> None:
    assert bot.process.stdout is not None
    async for raw in bot.process.stdout:
        bot.lines.append(raw.decode(errors="replace").rstrip("\n"))


async def _wait_ready(bot: Bot, homeserver: HomeserverProcess) -> None:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + READY_TIMEOUT_SECONDS
    while not any(line.startswith("READY ") for line in bot.lines):
        if bot.process.returncode is not None or loop.time() > give_up:
            pytest.fail(
                f"the bot did not get ready (exit {bot.process.returncode}):\n{bot.output()}"
                f"\n--- server log (tail)\n{homeserver.log()[-5000:]}"
            )
        await asyncio.sleep(0.1)


async def test_encrypted_chat_with_bot_sdk_appservice(
    appservice_homeserver: HomeserverProcess, bot: Bot
) -> None:
    async with new_session() as session:
        user = await MatrixClient(session, appservice_homeserver.base_url).register()
    ready = next(line for line in bot.lines if line.startswith("READY "))
    _, bot_user_id, bot_device_id = ready.split(" ")
    assert bot_user_id == BOT_USER_ID
    output = await run_node(
        "appservice_user.mjs",
        [appservice_homeserver.base_url, user.user_id, user.password, BOT_USER_ID],
        appservice_homeserver,
        timeout_s=USER_TIMEOUT_SECONDS,
        env={"USER_WAIT_MS": str(USER_WAIT_MS)},
    )
    bot_said = bot.output()
    assert "appservice_user.mjs: OK" in output, f"{output}\n--- bot\n{bot_said}"
    received = next(line for line in output.splitlines() if line.startswith("RECEIVED "))
    decrypted = [line for line in bot.lines if line.startswith("DECRYPTED ")]
    assert len(decrypted) == 1, bot_said
    body = json.loads(decrypted[0].split(" ", 2)[2])
    assert body.startswith("hello bot "), bot_said
    assert received.endswith(json.dumps(f"echo: {body}")), output
    # The room key reached the bot's device only through a transaction (MSC2409 to-device,
    # the bot has no sync), and its one-time key counts came the same way (MSC3202).
    pushed = [line.split(" ", 2)[1:] for line in bot.lines if line.startswith("PUSHED ")]
    room_key = f"m.room.encrypted to {BOT_USER_ID} {bot_device_id}"
    assert ["to_device", room_key] in pushed, bot_said
    counts = [json.loads(value) for what, value in pushed if what == "one_time_keys_count"]
    assert any(bot_device_id in count.get(BOT_USER_ID, {}) for count in counts), bot_said
    # The bot's device came from an m.login.application_service login and its keys were
    # uploaded with it. The one request refused is the SDK registering its bot, which the
    # server did at start (M_USER_IN_USE, which the SDK expects).
    requests = bot.requests().values()
    assert any(request.startswith("POST") and "/login" in request for request in requests)
    assert any("/keys/upload" in request for request in requests), bot_said
    assert [request.split("?")[0].rsplit("/", 1)[-1] for request in bot.failed_requests()] in (
        [],
        ["register"],
    ), bot_said
    assert not [
        line
        for line in bot.lines
        if line.startswith(("ERROR", "UNDECRYPTABLE", "CLEARTEXT"))
        and not line.startswith("ERROR MatrixHttpClient")
    ], bot_said
