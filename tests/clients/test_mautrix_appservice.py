"""An application service written with mautrix-python (its ``AppService`` and ``IntentAPI``)
attaches to Peyvand the way a bridge does (Application Service API, issue 20's acceptance):
a user invites the bot, the bot joins from the invite its transaction carried, a ghost user
bridges a "remote" message in (``?user_id=`` and ``?ts=``), the user's reply, typing and
read receipt reach the appservice (ephemeral events, MSC2409), and while the appservice is
down (a minute) the server retries with backoff, then delivers everything it missed, in
order, once.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from mautrix.appservice import AppService
from mautrix.appservice.state_store import FileASStateStore
from mautrix.types import (
    Event,
    EventType,
    Membership,
    MemberStateEventContent,
    MessageEvent,
    MessageType,
    ReceiptEvent,
    RoomID,
    StateEvent,
    TextMessageEventContent,
    TypingEvent,
    UserID,
)

from harness.admin import login_admin
from harness.appservice import write_registration
from harness.client import Account, MatrixClient, new_session
from harness.ports import free_port
from harness.rooms import say
from harness.server import SERVER_NAME, HomeserverProcess, running_homeserver

pytestmark = [
    pytest.mark.clients,
    # mautrix 0.21 still hands aiohttp the deprecated ``loop`` argument.
    pytest.mark.filterwarnings("ignore:.*loop.*:DeprecationWarning"),
]

OVERALL_TIMEOUT_SECONDS = 120
WAIT_SECONDS = 15.0
APPSERVICE_ID = "mautrix-python"
BOT_LOCALPART = "tgbot"
GHOST = UserID(f"@tg_alice:{SERVER_NAME}")
# A bridged message's time on the remote network: well in the past, so it cannot be "now".
REMOTE_TS = 1_600_000_000_000
# While the appservice is down, deliveries first refused (nothing listens), then answered
# 502 (a proxy in its place): enough failures to see the server keep retrying, waiting
# longer each time, rather than give up or hammer. It stays down a minute, as the issue
# says; with Peyvand's backoff (1 s, doubling) the attempt after it comes at about 63 s.
REFUSED_FAILURES = 2
FAILED_ATTEMPTS = 3
DOWN_SECONDS = 60.0
DOWN_LIMIT_SECONDS = 60.0
# Back up, the next attempt comes within one backoff wait (at most 64 s once down a minute).
CATCH_UP_LIMIT_SECONDS = 90.0
STATUS_POLLS = 300  # 100 ms apart
ADMIN_APPSERVICES = "/_peyvand/admin/v1/appservices"


@dataclass
class Received:
    """What the mautrix handlers saw, in the order mautrix handed it over."""

    events: list[Any] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, event: Event) -> None:
        self.events.append(event)
        self.changed.set()

    async def wait_for(self, predicate: Callable[[], bool], limit: float = WAIT_SECONDS) -> None:
        async with asyncio.timeout(limit):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    def room_messages(self, room_id: str, sender: str) -> list[str]:
        return [
            e.event_id
            for e in self.events
            if isinstance(e, MessageEvent) and e.room_id == room_id and e.sender == sender
        ]

    def memberships(self, room_id: str, user_id: str) -> list[Membership]:
        """The memberships of ``user_id`` in ``room_id`` received, oldest first."""
        return [
            e.content.membership
            for e in self.events
            if isinstance(e, StateEvent)
            and isinstance(e.content, MemberStateEventContent)
            and e.room_id == room_id
            and e.state_key == user_id
        ]

    def typing(self, room_id: RoomID) -> list[TypingEvent]:
        return [e for e in self.events if isinstance(e, TypingEvent) and e.room_id == room_id]

    def receipts(self, room_id: RoomID) -> list[ReceiptEvent]:
        return [e for e in self.events if isinstance(e, ReceiptEvent) and e.room_id == room_id]

    def event_ids(self) -> list[str]:
        """The IDs of every room event received (ephemeral events have none)."""
        return [e.event_id for e in self.events if getattr(e, "event_id", None)]


@dataclass
class Bridge:
    appservice: AppService
    received: Received
    port: int


@dataclass
class DownAppService:
    """Stands on the appservice's port while it is stopped, answering every transaction
    502 (a reverse proxy in front of a stopped bridge) and noting when each attempt came."""

    port: int
    attempts: list[float] = field(default_factory=list)
    attempted: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_put("/_matrix/app/v1/transactions/{txn_id}", self._refuse)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _refuse(self, _: web.Request) -> web.Response:
        self.attempts.append(time.monotonic())
        self.attempted.set()
        return web.json_response({"errcode": "M_UNKNOWN", "error": "bridge down"}, status=502)


@dataclass(frozen=True)
class Registration:
    path: Path
    port: int
    appservice_id: str = APPSERVICE_ID
    as_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    hs_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))


@pytest.fixture
def registration(tmp_path: Path) -> Registration:
    port = free_port()
    path = tmp_path / "mautrix-registration.yaml"
    info = Registration(path, port)
    write_registration(
        path,
        appservice_id=info.appservice_id,
        url=f"http://127.0.0.1:{port}",
        as_token=info.as_token,
        hs_token=info.hs_token,
        sender_localpart=BOT_LOCALPART,
        user_regex=f"@tg_.*:{SERVER_NAME}",
        rate_limited=False,
        receive_ephemeral=True,
    )
    # The unstable name of receive_ephemeral too (MSC2409), as older bridges write it.
    with path.open("a", encoding="utf-8") as file:
        file.write("de.sorunome.msc2409.push_ephemeral: true\n")
    return info


@pytest.fixture
def appservice_homeserver(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    registration: Registration,
) -> Iterator[HomeserverProcess]:
    files = json.dumps([str(registration.path)])
    (tmp_path / "hs").mkdir()
    options = {"app_service_config_files": files}
    with running_homeserver(backend, request, tmp_path / "hs", options=options) as server:
        yield server


@pytest.fixture
async def bridge(
    appservice_homeserver: HomeserverProcess, registration: Registration, tmp_path: Path
) -> AsyncIterator[Bridge]:
    appservice = AppService(
        server=appservice_homeserver.base_url,
        domain=SERVER_NAME,
        as_token=registration.as_token,
        hs_token=registration.hs_token,
        bot_localpart=BOT_LOCALPART,
        id=registration.appservice_id,
        state_store=FileASStateStore(path=str(tmp_path / "mx-state.json"), binary=False),
        ephemeral_events=True,
    )
    received = Received()
    joins: set[asyncio.Task[Any]] = set()

    async def on_event(event: Event) -> None:
        received.record(event)
        if (
            isinstance(event, StateEvent)
            and event.type == EventType.ROOM_MEMBER
            and event.state_key == appservice.bot_mxid
            and event.content.membership == Membership.INVITE
        ):
            # The bot accepts the invite it was sent, as a bridge's bot does.
            task = asyncio.create_task(appservice.intent.join_room(event.room_id))
            joins.add(task)
            task.add_done_callback(joins.discard)

    # Handlers run one after the other, so the order recorded is the order delivered.
    appservice.synchronous_handlers = True
    appservice.matrix_event_handler(on_event)
    await appservice.start(host="127.0.0.1", port=registration.port)
    try:
        yield Bridge(appservice, received, registration.port)
    finally:
        await appservice.stop()
        for task in joins:
            task.cancel()


async def _status_when(
    client: MatrixClient, admin: Account, condition: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The appservice's delivery state in the admin API, polled until ``condition`` holds."""
    for _ in range(STATUS_POLLS):
        status: dict[str, Any] = (
            await client.request("GET", f"{ADMIN_APPSERVICES}/{APPSERVICE_ID}", token=admin)
        ).ok()
        if condition(status):
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"the appservice's status never got there: {status}")


async def test_mautrix_appservice_bridges_both_ways(
    appservice_homeserver: HomeserverProcess, bridge: Bridge
) -> None:
    appservice, received = bridge.appservice, bridge.received
    bot = appservice.bot_mxid
    async with asyncio.timeout(OVERALL_TIMEOUT_SECONDS), new_session() as session:
        client = MatrixClient(session, appservice_homeserver.base_url)
        user = await client.register()
        admin = await login_admin(client, appservice_homeserver)

        # The user opens a private room with the bot; the bot joins from the transaction.
        room_id = RoomID(
            (
                await client.request(
                    "POST", "createRoom", {"preset": "private_chat", "invite": [bot]}, user
                )
            ).ok()["room_id"]
        )

        await received.wait_for(lambda: Membership.JOIN in received.memberships(room_id, bot))
        members = await client.request("GET", f"rooms/{room_id}/joined_members", token=user)
        assert bot in members.ok()["joined"]

        # A remote message bridged in by a ghost: registered, invited by the bot and joined
        # by mautrix's IntentAPI, then sent with ?user_id= and ?ts=.
        ghost = appservice.intent.user(GHOST)
        content = TextMessageEventContent(msgtype=MessageType.TEXT, body="hello from telegram")
        bridged = await ghost.send_message(room_id, content, timestamp=REMOTE_TS)
        seen = (await client.request("GET", f"rooms/{room_id}/event/{bridged}", token=user)).ok()
        assert seen["sender"] == GHOST
        assert seen["origin_server_ts"] == REMOTE_TS
        assert seen["content"]["body"] == "hello from telegram"

        # The user's reply reaches the appservice in a transaction.
        reply = await say(client, room_id, user, "hi ghost")
        await received.wait_for(lambda: reply in received.room_messages(room_id, user.user_id))

        # Typing and a read receipt reach it as ephemeral events (MSC2409).
        (
            await client.request(
                "PUT",
                f"rooms/{room_id}/typing/{user.user_id}",
                {"typing": True, "timeout": 10_000},
                user,
            )
        ).ok()
        await received.wait_for(
            lambda: any(str(user.user_id) in e.content.user_ids for e in received.typing(room_id))
        )
        (await client.request("POST", f"rooms/{room_id}/receipt/m.read/{bridged}", {}, user)).ok()
        await received.wait_for(
            lambda: any(str(bridged) in e.content for e in received.receipts(room_id))
        )

        # The appservice stops: nothing listens on its port, the server's deliveries are
        # refused, and the user keeps writing. The admin API shows the server retrying.
        await appservice.stop()
        stopped_at = time.monotonic()
        missed = [await say(client, room_id, user, f"while you were away {i}") for i in range(3)]
        refused = await _status_when(
            client, admin, lambda s: s["consecutive_failures"] >= REFUSED_FAILURES
        )
        assert refused["state"] == "backing_off", refused

        # Then a reverse proxy answers 502 in its place: the attempts it sees come further
        # and further apart.
        down = DownAppService(bridge.port)
        await down.start()
        try:
            missed += [await say(client, room_id, user, f"still away {i}") for i in range(2)]
            async with asyncio.timeout(DOWN_LIMIT_SECONDS):
                while len(down.attempts) < FAILED_ATTEMPTS:
                    down.attempted.clear()
                    await down.attempted.wait()
        finally:
            await down.stop()
        gaps = [b - a for a, b in zip(down.attempts, down.attempts[1:], strict=False)]
        assert gaps == sorted(gaps) and gaps[-1] > gaps[0], f"no backoff: {gaps}"
        failing = await _status_when(client, admin, lambda s: True)
        assert failing["consecutive_failures"] >= REFUSED_FAILURES + FAILED_ATTEMPTS, failing

        # Down a minute in all, then back up (the same AppService, which remembers the
        # transaction IDs it handled): everything missed arrives, in order, exactly once.
        await asyncio.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - stopped_at)))
        await appservice.start(host="127.0.0.1", port=bridge.port)
        await received.wait_for(
            lambda: set(missed) <= set(received.room_messages(room_id, user.user_id)),
            limit=CATCH_UP_LIMIT_SECONDS,
        )
        assert received.room_messages(room_id, user.user_id) == [reply, *missed]
        # Nothing arrives twice (mautrix drops a repeated txnId; the server must not resend
        # delivered events under a new one).
        ids = received.event_ids()
        assert len(ids) == len(set(ids)), f"an event arrived twice: {ids}"
        up = await _status_when(client, admin, lambda s: s["state"] == "up")
        assert up["consecutive_failures"] == 0, up
