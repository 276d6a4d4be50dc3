"""Email notifications (Client-Server API, "Push Notifications", pushers of kind
``email``) on every backend: a real Peyvand sending through a local SMTP server
(aiosmtpd) that the test reads; a digest after ``email.notif_delay``. An email pusher
needs a validated address ("Adding Account Administrative Contact Information"): the
tests validate it as a user would, with the link mailed by requestToken."""

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
from harness.server import HomeserverProcess, running_homeserver

APP_ID = "m.email"
DELAY = 2.0
MAIL_WAIT = DELAY + 5
UNSUBSCRIBE = "/_peyvand/client/unsubscribe"
VALIDATE = "/_peyvand/client/email/validate"


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

    def take(self, address: str) -> list[EmailMessage]:
        """What ``address`` received, forgotten."""
        with self._lock:
            taken = [m for m in self._messages if m["To"] == address]
            self._messages = [m for m in self._messages if m["To"] != address]
            return taken


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
    with running_homeserver(
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
    ) as server:
        yield server


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


def password_auth(account: Account) -> dict[str, Any]:
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": account.user_id},
        "password": account.password,
    }


async def request_token(
    mc: MatrixClient, mailbox: Mailbox, account: Account, address: str, secret: str
) -> tuple[str, str]:
    """requestToken for ``address``: the session's sid and the link mailed (taken out of
    the mailbox)."""
    body = {"client_secret": secret, "email": address, "send_attempt": 1}
    sid: str = (
        await mc.request("POST", "account/3pid/email/requestToken", json=body, token=account)
    ).ok()["sid"]
    mails = await wait_for_mail(mailbox, address)
    assert len(mails) == 1, mails
    mailbox.take(address)
    plain = mails[0].get_content()
    links = [word for word in plain.split() if VALIDATE in word]
    assert len(links) == 1, plain
    return sid, links[0]


async def add_email(mc: MatrixClient, mailbox: Mailbox, account: Account, address: str) -> None:
    """Validate ``address`` for ``account`` through the link mailed, then bind it."""
    secret = unique_localpart("secret")
    sid, link = await request_token(mc, mailbox, account, address, secret)
    async with new_session() as browser, browser.get(link) as followed:
        assert followed.status == 200, await followed.text()
        assert "validated" in await followed.text()
    body: dict[str, Any] = {"client_secret": secret, "sid": sid}
    first = await mc.request("POST", "account/3pid/add", json=body, token=account)
    assert first.status == 401, first.body
    body["auth"] = {**password_auth(account), "session": first.body["session"]}
    (await mc.request("POST", "account/3pid/add", json=body, token=account)).ok()


async def setup(mc: MatrixClient, mailbox: Mailbox) -> tuple[Account, Account, str, str]:
    """Alice (display name Alice), Bob with an email pusher for his validated address, a
    room of three."""
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
    await add_email(mc, mailbox, bob, address)
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
    alice, bob, room_id, address = await setup(mc, mailbox)
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
    alice, bob, room_id, address = await setup(mc, mailbox)
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
    alice, _, room_id, address = await setup(mc, mailbox)
    mailbox.fail_once.add(address)
    await say(mc, room_id, alice, "are you there?")
    arrived = await wait_for_mail(mailbox, address)
    assert mailbox.refused.count(address) == 1
    assert len(arrived) == 1
    await asyncio.sleep(1.5)
    assert len(mailbox.to(address)) == 1
    plain, _ = parts(arrived[0])
    assert "are you there?" in plain


async def test_an_address_is_validated_by_its_link_then_takes_pushers(
    mc: MatrixClient, smtp: tuple[Mailbox, int]
) -> None:
    mailbox = smtp[0]
    bob, eve = await mc.register(), await mc.register()
    capabilities = (await mc.request("GET", "capabilities", token=bob)).ok()["capabilities"]
    assert capabilities["m.3pid_changes"] == {"enabled": True}
    address = f"{unique_localpart('bob')}@example.org"
    # Not validated: no pusher, and nothing bound.
    refused = await mc.request("POST", "pushers/set", json=email_pusher(address), token=bob)
    assert refused.status == 400, refused.body
    assert refused.body["errcode"] == "M_THREEPID_NOT_FOUND"

    secret = unique_localpart("secret")
    sid, link = await request_token(mc, mailbox, bob, address, secret)
    # The same send_attempt mails nothing and answers the same session.
    again = {"client_secret": secret, "email": address, "send_attempt": 1}
    repeated = await mc.request("POST", "account/3pid/email/requestToken", json=again, token=bob)
    assert repeated.ok()["sid"] == sid
    # Not yet validated: it cannot be added.
    add = {"client_secret": secret, "sid": sid, "auth": password_auth(bob)}
    early = await mc.request("POST", "account/3pid/add", json=add, token=bob)
    assert early.status in (400, 401), early.body
    if early.status == 400:
        assert early.body["errcode"] == "M_THREEPID_AUTH_FAILED"
    # A wrong token validates nothing.
    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    forged = urlencode({**query, "token": "x" * 32})
    async with new_session() as browser:
        async with browser.get(f"{mc.base_url}{VALIDATE}?{forged}") as wrong:
            assert wrong.status == 400
        async with browser.get(link) as followed:
            assert followed.status == 200, await followed.text()
    assert mailbox.to(address) == []

    first = await mc.request(
        "POST", "account/3pid/add", json={"client_secret": secret, "sid": sid}, token=bob
    )
    add["auth"] = {**password_auth(bob), "session": first.body["session"]}
    (await mc.request("POST", "account/3pid/add", json=add, token=bob)).ok()
    threepids = (await mc.request("GET", "account/3pid", token=bob)).ok()["threepids"]
    assert [(t["medium"], t["address"]) for t in threepids] == [("email", address)]
    assert threepids[0]["validated_at"] <= threepids[0]["added_at"]
    (await mc.request("POST", "pushers/set", json=email_pusher(address), token=bob)).ok()

    # Bound to bob: eve can neither ask for it nor mail it.
    taken = {"client_secret": secret, "email": address.upper(), "send_attempt": 1}
    in_use = await mc.request("POST", "account/3pid/email/requestToken", json=taken, token=eve)
    assert in_use.status == 400
    assert in_use.body["errcode"] == "M_THREEPID_IN_USE"
    eves = await mc.request("POST", "pushers/set", json=email_pusher(address), token=eve)
    assert eves.body["errcode"] == "M_THREEPID_NOT_FOUND"

    # Removing the address removes its pusher.
    delete = {"medium": "email", "address": address}
    removed = await mc.request("POST", "account/3pid/delete", json=delete, token=bob)
    assert removed.ok() == {"id_server_unbind_result": "no-support"}
    assert (await mc.request("GET", "account/3pid", token=bob)).ok()["threepids"] == []
    assert (await mc.request("GET", "pushers", token=bob)).ok()["pushers"] == []
