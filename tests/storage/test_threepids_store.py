"""Email address validation (``services.accounts.threepids`` over ``storage.threepids``,
schema 040) on both backends, with a fake mail sender and clock: a session expires, a
wrong token validates nothing, a repeated send_attempt mails nothing, mails to one
address are limited, and an address belongs to one user."""

from __future__ import annotations

from email.message import EmailMessage
from urllib.parse import parse_qs, urlsplit

import pytest

from peyvand.config.model import EmailConfig
from peyvand.errors import Errcode, MatrixError
from peyvand.services.accounts.threepids import (
    MAX_MAILS_PER_ADDRESS,
    SESSION_LIFETIME_MS,
    ThreepidService,
)
from peyvand.storage.database import Database
from peyvand.storage.threepids import ThreepidStore
from peyvand.types import UserID

ALICE = UserID("@alice:test")
BOB = UserID("@bob:test")


class Outbox:
    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []

    async def send(self, message: EmailMessage) -> None:
        self.sent.append(message)

    def last_query(self) -> dict[str, str]:
        link = next(w for w in self.sent[-1].get_content().split() if "validate?" in w)
        return {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def service(database: Database, outbox: Outbox, clock: Clock) -> ThreepidService:
    removed: list[tuple[UserID, str]] = []

    async def on_removed(user_id: UserID, address: str) -> None:
        removed.append((user_id, address))

    return ThreepidService(
        ThreepidStore(database),
        email=EmailConfig(smtp_host="localhost"),
        sender=outbox,
        base_url="https://hs.test",
        on_address_removed=on_removed,
        clock=clock,
    )


def assert_code(exc: pytest.ExceptionInfo[MatrixError], errcode: Errcode) -> None:
    assert exc.value.errcode is errcode, exc.value.message


async def test_validated_address_is_bound_once(database: Database) -> None:
    outbox, clock = Outbox(), Clock()
    threepids = service(database, outbox, clock)
    sid = await threepids.request_email_token("s1", "Alice@Example.org", 1, None)
    assert len(outbox.sent) == 1 and outbox.sent[0]["To"] == "alice@example.org"
    # The same send_attempt: the same session, no second mail.
    assert await threepids.request_email_token("s1", "alice@example.org", 1, None) == sid
    assert len(outbox.sent) == 1
    query = outbox.last_query()
    assert query["sid"] == sid
    with pytest.raises(MatrixError) as unvalidated:
        await threepids.add_threepid(ALICE, sid, "s1")
    assert_code(unvalidated, Errcode.THREEPID_AUTH_FAILED)
    with pytest.raises(MatrixError) as wrong:
        await threepids.validate(sid, "s1", query["token"] + "x")
    assert_code(wrong, Errcode.THREEPID_AUTH_FAILED)
    with pytest.raises(MatrixError) as other_secret:
        await threepids.validate(sid, "s2", query["token"])
    assert_code(other_secret, Errcode.THREEPID_AUTH_FAILED)
    assert await threepids.validate(sid, "s1", query["token"]) is None
    await threepids.add_threepid(ALICE, sid, "s1")
    listed = await threepids.get_threepids(ALICE)
    assert [(t["medium"], t["address"]) for t in listed] == [("email", "alice@example.org")]
    store = ThreepidStore(database)
    assert await store.get_owner("email", "alice@example.org") == ALICE
    # Bound: nobody else can ask for it, nor bind a session validated before.
    with pytest.raises(MatrixError) as in_use:
        await threepids.request_email_token("s3", "alice@example.org", 1, None)
    assert_code(in_use, Errcode.THREEPID_IN_USE)
    with pytest.raises(MatrixError) as bound:
        await threepids.add_threepid(BOB, sid, "s1")
    assert_code(bound, Errcode.THREEPID_IN_USE)
    await threepids.delete_threepid(ALICE, "email", "ALICE@example.org")
    assert await threepids.get_threepids(ALICE) == []
    assert await store.get_owner("email", "alice@example.org") is None


async def test_deactivation_frees_the_addresses(database: Database) -> None:
    outbox, clock = Outbox(), Clock()
    threepids = service(database, outbox, clock)
    sid = await threepids.request_email_token("s1", "dan@example.org", 1, None)
    await threepids.validate(sid, "s1", outbox.last_query()["token"])
    await threepids.add_threepid(ALICE, sid, "s1")
    await threepids.on_deactivated(ALICE)
    assert await threepids.get_threepids(ALICE) == []
    await threepids.request_email_token("s2", "dan@example.org", 1, None)


async def test_expired_session_is_refused(database: Database) -> None:
    outbox, clock = Outbox(), Clock()
    threepids = service(database, outbox, clock)
    sid = await threepids.request_email_token("s1", "bob@example.org", 1, None)
    token = outbox.last_query()["token"]
    clock.now += SESSION_LIFETIME_MS / 1000 + 1
    with pytest.raises(MatrixError) as expired:
        await threepids.validate(sid, "s1", token)
    assert_code(expired, Errcode.THREEPID_AUTH_FAILED)
    # Validated, then expired before it is added.
    sid = await threepids.request_email_token("s2", "bob@example.org", 1, None)
    await threepids.validate(sid, "s2", outbox.last_query()["token"])
    clock.now += SESSION_LIFETIME_MS / 1000 + 1
    with pytest.raises(MatrixError) as late:
        await threepids.add_threepid(BOB, sid, "s2")
    assert_code(late, Errcode.THREEPID_AUTH_FAILED)


async def test_new_send_attempt_mails_a_new_token_within_the_limit(database: Database) -> None:
    outbox, clock = Outbox(), Clock()
    threepids = service(database, outbox, clock)
    sid = await threepids.request_email_token("s1", "carol@example.org", 1, None)
    first = outbox.last_query()["token"]
    assert await threepids.request_email_token("s1", "carol@example.org", 2, None) == sid
    second = outbox.last_query()["token"]
    assert first != second
    with pytest.raises(MatrixError):
        await threepids.validate(sid, "s1", first)
    await threepids.validate(sid, "s1", second)
    for attempt in range(3, MAX_MAILS_PER_ADDRESS + 1):
        await threepids.request_email_token("s1", "carol@example.org", attempt, None)
    with pytest.raises(MatrixError) as limited:
        await threepids.request_email_token("s1", "carol@example.org", 99, None)
    assert_code(limited, Errcode.LIMIT_EXCEEDED)
    assert len(outbox.sent) == MAX_MAILS_PER_ADDRESS


async def test_bad_input_is_refused(database: Database) -> None:
    threepids = service(database, Outbox(), Clock())
    for secret, address, next_link in (
        ("bad secret", "a@example.org", None),
        ("s", "not-an-address", None),
        ("s", "a@example.org", "javascript:alert(1)"),
    ):
        with pytest.raises(MatrixError) as bad:
            await threepids.request_email_token(secret, address, 1, next_link)
        assert_code(bad, Errcode.INVALID_PARAM)
    with pytest.raises(MatrixError) as none:
        await threepids.delete_threepid(ALICE, "email", "a@example.org")
    assert_code(none, Errcode.THREEPID_NOT_FOUND)
