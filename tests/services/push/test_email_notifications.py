"""Email notifications (Client-Server API, "Push Notifications", pushers of kind
``email``) on every backend: a real Peyvand sending through a local SMTP server
(aiosmtpd) that the test reads; a digest after ``email.notif_delay``."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
import time
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from harness.client import Account, MatrixClient, new_session, unique_localpart
from harness.ports import free_port
from harness.server import HomeserverProcess, start_homeserver

APP_ID = "m.email"
DELAY = 2.0
MAIL_WAIT = DELAY + 5
UNSUBSCRIBE = "/_peyvand/client/unsubscribe"


class Mailbox:
    """What the SMTP server received (its handler runs in the controller's thread); the
    first message to an address in ``fail_once`` is refused with a temporary error."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[EmailMessage] = []
        self.fail_once: set[str] = set()
        self.refused: list[str] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            for address in envelope.rcpt_tos:
                if address in self.fail_once:
                    self.fail_once.discard(address)
                    self.refused.append(address)
                    return "451 4.3.0 Try again later"
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self._messages.append(message)
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [m for m in self._messages if m["To"] == address]


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def email_server(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    smtp: tuple[Mailbox, int],
) -> Iterator[HomeserverProcess]:
    server = start_homeserver(
        backend,
        request,
        tmp_path_factory.mktemp("email"),
        options={
            "email.smtp_host": '"127.0.0.1"',
            "email.smtp_port": str(smtp[1]),
            "email.notif_from": '"Peyvand <noreply@peyvand.test>"',
            "email.app_name": '"Peyvand Test"',
            "email.notif_delay": str(DELAY),
        },
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def mc(email_server: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, email_server.base_url)


def email_pusher(address: str, **changes: Any) -> dict[str, Any]:
    body = {
        "kind": "email",
        "app_id": APP_ID,
        "pushkey": address,
        "app_display_name": "Email notifications",
        "device_display_name": address,
        "lang": "en",
        "data": {},
    }
    body.update(changes)
    return body


async def setup(mc: MatrixClient) -> tuple[Account, Account, str, str]:
    """Alice (display name Alice), Bob with an email pusher, a room of three."""
    alice, bob, carol = await mc.register(), await mc.register(), await mc.register()
    name = {"displayname": "Alice"}
    (await mc.request("PUT", f"profile/{alice.user_id}/displayname", json=name, token=alice)).ok()
    created = await mc.request(
        "POST", "createRoom", json={"preset": "public_chat", "name": "Tea & <Cake>"}, token=alice
    )
    room_id: str = created.ok()["room_id"]
    for member in (bob, carol):
        (await mc.request("POST", f"join/{quote(room_id)}", json={}, token=member)).ok()
    address = f"{unique_localpart('bob')}@example.org"
    (await mc.request("POST", "pushers/set", json=email_pusher(address), token=bob)).ok()
    return alice, bob, room_id, address


async def say(mc: MatrixClient, room_id: str, sender: Account, body: str) -> str:
    event_id: str = (
        await mc.request(
            "PUT",
            f"rooms/{quote(room_id)}/send/m.room.message/{unique_localpart('txn')}",
            json={"msgtype": "m.text", "body": body},
            token=sender,
        )
    ).ok()["event_id"]
    return event_id


async def wait_for_mail(mailbox: Mailbox, address: str) -> list[EmailMessage]:
    """What ``address`` received, once something has (at most ``MAIL_WAIT`` seconds)."""
    for _ in range(int(MAIL_WAIT / 0.05)):
        if mailbox.to(address):
            break
        await asyncio.sleep(0.05)
    return mailbox.to(address)


def parts(message: EmailMessage) -> tuple[str, str]:
    plain = message.get_body(("plain",))
    rich = message.get_body(("html",))
    assert plain is not None and rich is not None
    return plain.get_content(), rich.get_content()


async def test_missed_messages_arrive_in_one_digest_with_unsubscribe(
    mc: MatrixClient, smtp: tuple[Mailbox, int]
) -> None:
    mailbox = smtp[0]
    alice, bob, room_id, address = await setup(mc)
    sent_at = time.monotonic()
    await say(mc, room_id, alice, "hello <b>bob</b>")
    await say(mc, room_id, alice, "second message")

    arrived = await wait_for_mail(mailbox, address)
    assert arrived, "no digest arrived"
    assert time.monotonic() - sent_at >= DELAY - 0.5, "the digest came before the delay"
    # One digest, however long we wait.
    await asyncio.sleep(1.5)
    assert len(mailbox.to(address)) == 1
    message = arrived[0]
    assert message["From"] == "Peyvand <noreply@peyvand.test>"
    assert "2 unread messages" in message["Subject"]
    assert "Peyvand Test" in message["Subject"]
    plain, rich = parts(message)
    assert "Alice: hello <b>bob</b>" in plain
    assert "second message" in plain
    assert "Tea & <Cake>" in plain
    assert "hello &lt;b&gt;bob&lt;/b&gt;" in rich
    assert "<b>bob</b>" not in rich
    assert "Tea &amp; &lt;Cake&gt;" in rich

    link = message["List-Unsubscribe"].strip("<>")
    assert link in plain
    assert urlsplit(link).path == UNSUBSCRIBE
    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    assert query["pushkey"] == address

    # A forged token is refused and the pusher stays.
    forged = {**query, "token": "A" * 43}
    async with new_session() as browser:
        url = f"{mc.base_url}{UNSUBSCRIBE}?{urlencode(forged)}"
        async with browser.get(url) as refused:
            assert refused.status == 403
            assert (await refused.json())["errcode"] == "M_FORBIDDEN"
        pushers = (await mc.request("GET", "pushers", token=bob)).ok()["pushers"]
        assert [p["pushkey"] for p in pushers] == [address]

        async with browser.get(link) as followed:
            assert followed.status == 200, await followed.text()
    assert (await mc.request("GET", "pushers", token=bob)).ok()["pushers"] == []


async def test_messages_read_before_the_delay_are_not_mailed(
    mc: MatrixClient, smtp: tuple[Mailbox, int]
) -> None:
    mailbox = smtp[0]
    alice, bob, room_id, address = await setup(mc)
    await say(mc, room_id, alice, "one")
    last = await say(mc, room_id, alice, "two")
    receipt = f"rooms/{quote(room_id)}/receipt/m.read/{quote(last)}"
    (await mc.request("POST", receipt, json={}, token=bob)).ok()
    await asyncio.sleep(DELAY + 1.5)
    assert mailbox.to(address) == []
    # A later message, unread, still gets its digest, with that message only.
    await say(mc, room_id, alice, "three")
    arrived = await wait_for_mail(mailbox, address)
    assert len(arrived) == 1
    plain, _ = parts(arrived[0])
    assert "three" in plain
    assert "one" not in plain.split("unread")[1]


async def test_email_pusher_needs_an_address(mc: MatrixClient) -> None:
    bob = await mc.register()
    for bad in ("not-an-address", "a b@example.org", "bob@localhost", "<x@example.org>"):
        response = await mc.request("POST", "pushers/set", json=email_pusher(bad), token=bob)
        assert response.status == 400, (bad, response.body)
        assert response.body["errcode"] == "M_INVALID_PARAM"


async def test_refused_digest_is_sent_again_once(
    mc: MatrixClient, smtp: tuple[Mailbox, int]
) -> None:
    mailbox = smtp[0]
    alice, _, room_id, address = await setup(mc)
    mailbox.fail_once.add(address)
    await say(mc, room_id, alice, "are you there?")
    arrived = await wait_for_mail(mailbox, address)
    assert mailbox.refused.count(address) == 1
    assert len(arrived) == 1
    await asyncio.sleep(1.5)
    assert len(mailbox.to(address)) == 1
    plain, _ = parts(arrived[0])
    assert "are you there?" in plain
