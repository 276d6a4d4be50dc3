"""An encrypted appservice bot on matrix-bot-sdk (npm ``@vector-im/matrix-bot-sdk``, its
``Appservice`` class with encryption on) against Peyvand, issue 20's acceptance: a user on
matrix-js-sdk (Rust crypto) creates an encrypted room, invites the bot, the bot joins and
brings its ghost user, the user's message reaches the appservice in a transaction and is
decrypted there, and the encrypted answers of the bot and of the ghost are decrypted by
the user.

The appservice encrypts through the extensions of the Application Service API: MSC2409
to-device messages and MSC3202 one-time key counts and device lists in transactions (it
has no sync loop, so the room keys the user sends arrive only inside transactions). The
bot's device comes from an ``m.login.application_service`` login; the ghost already has a
device without keys, which the SDK takes over by MSC3202 device masquerading
(``?user_id=…&org.matrix.msc3202.device_id=…`` with the as_token).
tests/clients/js/appservice_bot.mjs is the appservice, appservice_user.mjs the user.
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
GHOST_LOCALPART = "echo_ghost"
GHOST_USER_ID = f"@{GHOST_LOCALPART}:{SERVER_NAME}"
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
    as_token: str


@dataclass
class Bot:
    """The running bot process and every line it printed."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "\n".join(self.lines)

    def devices(self) -> dict[str, str]:
        """The device of each user whose encryption is ready ("READY <user> <device>")."""
        ready = (line.split(" ") for line in self.lines if line.startswith("READY "))
        return {user_id: device_id for _, user_id, device_id in ready}

    def pushed(self, what: str) -> list[str]:
        """What the transactions carried of one kind ("PUSHED <what> <details>")."""
        lines = (line.split(" ", 2) for line in self.lines if line.startswith("PUSHED "))
        return [details for _, kind, details in lines if kind == what]

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
    as_token = secrets.token_urlsafe(24)
    path = write_registration(
        tmp_path / "echo-bot.yaml",
        appservice_id="matrix-bot-sdk-echo",
        url=f"http://127.0.0.1:{port}",
        as_token=as_token,
        hs_token=secrets.token_urlsafe(24),
        sender_localpart=BOT_LOCALPART,
        user_regex=f"@echo_.*:{SERVER_NAME}",
        rate_limited=False,
        **UNSTABLE_FLAGS,
    )
    json_path = tmp_path / "echo-bot.json"
    json_path.write_text(json.dumps(yaml.safe_load(path.read_text(encoding="utf-8"))))
    return Registration(path, json_path, port, as_token)


@pytest.fixture
def appservice_homeserver(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, registration: Registration
) -> Iterator[HomeserverProcess]:
    (tmp_path / "hs").mkdir()
    options = {"app_service_config_files": json.dumps([str(registration.path)])}
    with running_homeserver(backend, request, tmp_path / "hs", options=options) as server:
        yield server


@pytest.fixture
async def ghost_device(appservice_homeserver: HomeserverProcess, registration: Registration) -> str:
    """A device of the ghost, without keys, made as a bridge makes one: the ghost is
    registered and logged in by the appservice (``m.login.application_service``)."""
    async with new_session() as session:
        client = MatrixClient(session, appservice_homeserver.base_url)
        appservice = {"type": "m.login.application_service"}
        registered = await client.request(
            "POST",
            "register",
            {**appservice, "username": GHOST_LOCALPART, "inhibit_login": True},
            token=registration.as_token,
        )
        assert registered.status == 200, registered.body
        identifier = {"type": "m.id.user", "user": GHOST_LOCALPART}
        login = await client.request(
            "POST", "login", {**appservice, "identifier": identifier}, token=registration.as_token
        )
    assert login.status == 200, login.body
    device_id: str = login.body["device_id"]
    return device_id


@pytest.fixture
async def bot(
    appservice_homeserver: HomeserverProcess,
    registration: Registration,
    ghost_device: str,
    tmp_path: Path,
) -> AsyncIterator[Bot]:
    """The appservice, started and ready (the bot's and the ghost's keys uploaded);
    killed at the end."""
    binary = node(BOT_SDK)
    process = await asyncio.create_subprocess_exec(
        binary,
        "appservice_bot.mjs",
        str(registration.json_path),
        appservice_homeserver.base_url,
        SERVER_NAME,
        str(registration.port),
        str(tmp_path / "bot-store"),
        GHOST_USER_ID,
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
    while len(bot.devices()) < 2:
        if bot.process.returncode is not None or loop.time() > give_up:
            pytest.fail(
                f"the appservice did not get ready (exit {bot.process.returncode}):\n{bot.output()}"
                f"\n--- server log (tail)\n{homeserver.log()[-5000:]}"
            )
        await asyncio.sleep(0.1)


async def test_encrypted_chat_with_bot_sdk_appservice(
    appservice_homeserver: HomeserverProcess, bot: Bot, ghost_device: str
) -> None:
    async with new_session() as session:
        user = await MatrixClient(session, appservice_homeserver.base_url).register()
    devices = bot.devices()
    output = await run_node(
        "appservice_user.mjs",
        [appservice_homeserver.base_url, user.user_id, user.password, BOT_USER_ID, GHOST_USER_ID],
        appservice_homeserver,
        timeout_s=USER_TIMEOUT_SECONDS,
        env={"USER_WAIT_MS": str(USER_WAIT_MS)},
    )
    bot_said = bot.output()
    assert "appservice_user.mjs: OK" in output, f"{output}\n--- bot\n{bot_said}"
    decrypted = [line.split(" ", 2)[2] for line in bot.lines if line.startswith("DECRYPTED ")]
    assert len(decrypted) == 1, bot_said
    body = json.loads(decrypted[0])
    assert body.startswith("hello bot "), bot_said
    received = [line.split(" ") for line in output.splitlines() if line.startswith("RECEIVED ")]
    answers = {sender: json.loads(" ".join(text)) for _, sender, _, *text in received}
    assert answers == {BOT_USER_ID: f"echo: {body}", GHOST_USER_ID: f"ghost: {body}"}, output

    # The ghost took over the device it had (MSC3202 device masquerading), the bot got
    # its own from an m.login.application_service login.
    assert devices[GHOST_USER_ID] == ghost_device, bot_said
    assert devices[BOT_USER_ID] != ghost_device, bot_said
    masquerade = f'"org.matrix.msc3202.device_id":"{ghost_device}"'
    assert any(masquerade in line for line in bot.lines if line.startswith("REQ ")), bot_said
    requests = bot.requests().values()
    assert any(request.startswith("POST") and "/login" in request for request in requests)

    # The room keys reached both devices only through transactions (MSC2409 to-device,
    # the appservice has no sync), and one-time key counts came the same way (MSC3202).
    to_device = bot.pushed("to_device")
    for user_id, device_id in devices.items():
        assert f"m.room.encrypted to {user_id} {device_id}" in to_device, bot_said
    counts = [json.loads(count) for count in bot.pushed("one_time_keys_count")]
    for user_id, device_id in devices.items():
        assert any(device_id in count.get(user_id, {}) for count in counts), bot_said

    # The only requests refused are the SDK registering its bot and its ghost, which
    # exist already (M_USER_IN_USE, which the SDK expects and logs).
    failed = {request.split("?")[0].rsplit("/", 1)[-1] for request in bot.failed_requests()}
    assert failed <= {"register"}, bot_said
    expected = ("ERROR MatrixHttpClient", "ERROR Appservice Error registering user")
    problems = ("ERROR", "UNDECRYPTABLE", "CLEARTEXT")
    assert not [
        line for line in bot.lines if line.startswith(problems) and not line.startswith(expected)
    ], bot_said
