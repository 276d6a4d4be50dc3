"""A user's email addresses (Client-Server API, "Adding Account Administrative Contact
Information"), validated by this server itself, as Synapse does when it has an email
configuration (no identity server is involved):

1. ``POST /account/3pid/email/requestToken`` opens a validation session (``sid``) for
   (``client_secret``, address) and mails a link holding a random token (only its
   SHA-256 is stored); a repeated ``send_attempt`` mails nothing, and each address gets
   at most ``MAX_MAILS_PER_ADDRESS`` mails per hour (as Synapse, an address already
   bound is refused with 400 ``M_THREEPID_IN_USE``);
2. following the link (``VALIDATE_PATH``) validates the session, before it expires
   (``SESSION_LIFETIME_MS``, Synapse's default hour);
3. ``POST /account/3pid/add`` (after UIA) binds the validated address to the user.

``email`` pushers are accepted only for the user's validated addresses
(``services.push.pushers``); removing an address removes its email pushers.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from typing import Final, Protocol
from urllib.parse import urlencode, urlsplit

from peyvand.config.model import EmailConfig
from peyvand.errors import Errcode, MatrixError
from peyvand.lru import LRU
from peyvand.services.push.email.smtp import SmtpError
from peyvand.storage.errors import ConflictError
from peyvand.storage.threepids import Threepid, ThreepidStore, ValidationSession
from peyvand.types import JsonDict, UserID

logger = logging.getLogger(__name__)

EMAIL: Final = "email"
VALIDATE_PATH: Final = "/_peyvand/client/email/validate"
SESSION_LIFETIME_MS: Final = 3600 * 1000
MAX_MAILS_PER_ADDRESS: Final = 5
_WINDOW_SECONDS: Final = 3600.0
# client_secret (spec, "requestToken"): [0-9a-zA-Z.=_-], at most 255 characters.
_CLIENT_SECRET: Final = re.compile(r"[0-9a-zA-Z.=_-]{1,255}")
_MAX_ADDRESS_CHARS: Final = 254


class MailSender(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


# Removes the user's email pushers for an address no longer theirs.
AddressRemoved = Callable[[UserID, str], Awaitable[None]]


def canonical_email(address: str) -> str:
    """The form addresses are stored and compared in (as Synapse: trimmed, lower case)."""
    return address.strip().lower()


def check_client_secret(client_secret: str) -> None:
    if not _CLIENT_SECRET.fullmatch(client_secret):
        raise MatrixError(Errcode.INVALID_PARAM, "Invalid client_secret")


def check_email_address(address: str, what: str = "Invalid email address") -> None:
    """One address, ``local@domain`` (no display name, list or comment), at most
    ``_MAX_ADDRESS_CHARS`` long; else 400 ``M_INVALID_PARAM`` saying ``what``."""
    local, at, domain = address.rpartition("@")
    if (
        not at
        or not local
        or len(address) > _MAX_ADDRESS_CHARS
        or "." not in domain.strip(".")
        or any(c.isspace() or c in '<>,;"()[]\\' or ord(c) < 32 for c in address)
    ):
        raise MatrixError(Errcode.INVALID_PARAM, what)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ThreepidService:
    def __init__(
        self,
        store: ThreepidStore,
        *,
        email: EmailConfig,
        sender: MailSender | None,
        base_url: str,
        on_address_removed: AddressRemoved,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._email = email
        self._sender = sender
        self._base_url = base_url.rstrip("/")
        self._on_address_removed = on_address_removed
        self._clock = clock
        # address -> times (s) of the mails sent to it in the last hour.
        self._sent: LRU[str, list[float]] = LRU(10_000)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def get_threepids(self, user_id: UserID) -> list[JsonDict]:
        """GET /account/3pid."""
        return [
            {
                "medium": t.medium,
                "address": t.address,
                "validated_at": t.validated_at,
                "added_at": t.added_at,
            }
            for t in await self._store.get_threepids(user_id)
        ]

    async def request_email_token(
        self, client_secret: str, address: str, send_attempt: int, next_link: str | None
    ) -> str:
        """POST /account/3pid/email/requestToken: the session's ``sid``."""
        if self._sender is None:
            raise MatrixError(
                Errcode.THREEPID_MEDIUM_NOT_SUPPORTED,
                "Adding an email to your account is disabled on this server",
            )
        check_client_secret(client_secret)
        check_email_address(address)
        address = canonical_email(address)
        if next_link is not None:
            parts = urlsplit(next_link)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise MatrixError(Errcode.INVALID_PARAM, "'next_link' must be an http(s) URL")
        if await self._store.get_owner(EMAIL, address) is not None:
            raise MatrixError(Errcode.THREEPID_IN_USE, "Email is already in use")
        now = self._now_ms()
        await self._store.delete_expired_sessions(now)
        session = await self._store.latest_session(client_secret, EMAIL, address)
        if session is not None and send_attempt <= session.send_attempt:
            return session.sid
        self._count_mail(address)
        token = secrets.token_urlsafe(24)
        sid = session.sid if session is not None else secrets.token_urlsafe(16)
        await self._store.upsert_session(
            ValidationSession(
                sid,
                client_secret,
                EMAIL,
                address,
                _hash(token),
                send_attempt,
                now + SESSION_LIFETIME_MS,
                None,
                next_link,
            )
        )
        try:
            await self._sender.send(self._message(address, sid, client_secret, token))
        except SmtpError as exc:
            logger.warning("validation email to %s not sent: %s", address, exc)
            raise MatrixError(Errcode.UNKNOWN, "Could not send the email", status=500) from None
        return sid

    def _count_mail(self, address: str) -> None:
        now = self._clock()
        recent = [t for t in self._sent.get(address) or [] if t > now - _WINDOW_SECONDS]
        if len(recent) >= MAX_MAILS_PER_ADDRESS:
            raise MatrixError(
                Errcode.LIMIT_EXCEEDED,
                "Too many validation emails sent to this address",
                retry_after_ms=int((recent[0] + _WINDOW_SECONDS - now) * 1000),
            )
        self._sent.put(address, [*recent, now])

    def _message(self, address: str, sid: str, client_secret: str, token: str) -> EmailMessage:
        query = urlencode({"sid": sid, "client_secret": client_secret, "token": token})
        link = f"{self._base_url}{VALIDATE_PATH}?{query}"
        app = self._email.app_name
        message = EmailMessage()
        message["From"] = self._email.notif_from
        message["To"] = address
        message["Subject"] = f"[{app}] Validate your email"
        message.set_content(
            f"A request was made to add this email address to a {app} account.\n\n"
            f"To confirm it, follow this link:\n\n{link}\n\n"
            "If this was not you, ignore this email.\n"
        )
        return message

    async def validate(self, sid: str, client_secret: str, token: str) -> str | None:
        """Following the link mailed: validate the session (400 M_THREEPID_AUTH_FAILED for
        an unknown or expired session or a wrong token); its ``next_link``, if any."""
        session = await self._store.get_session(sid, client_secret)
        now = self._now_ms()
        if session is None or session.expires_at <= now:
            raise MatrixError(Errcode.THREEPID_AUTH_FAILED, "Unknown or expired session")
        if not hmac.compare_digest(session.token_hash, _hash(token)):
            raise MatrixError(Errcode.THREEPID_AUTH_FAILED, "Invalid validation token")
        await self._store.set_validated(sid, now)
        return session.next_link

    async def add_threepid(self, user_id: UserID, sid: str, client_secret: str) -> None:
        """POST /account/3pid/add (UIA done by the caller): bind the session's address."""
        check_client_secret(client_secret)
        session = await self._store.get_session(sid, client_secret)
        now = self._now_ms()
        if session is None or session.validated_at is None or session.expires_at <= now:
            raise MatrixError(Errcode.THREEPID_AUTH_FAILED, "No validated 3pid session found")
        try:
            await self._store.add_threepid(
                Threepid(user_id, session.medium, session.address, session.validated_at, now)
            )
        except ConflictError:
            raise MatrixError(Errcode.THREEPID_IN_USE, "Email is already in use") from None

    async def delete_threepid(self, user_id: UserID, medium: str, address: str) -> None:
        """POST /account/3pid/delete: unbind, and remove the address's email pushers."""
        address = canonical_email(address) if medium == EMAIL else address
        if not await self._store.delete_threepid(user_id, medium, address):
            raise MatrixError(Errcode.THREEPID_NOT_FOUND, "No such third-party identifier")
        if medium == EMAIL:
            await self._on_address_removed(user_id, address)

    async def on_deactivated(self, user_id: UserID) -> None:
        """A deactivated account's addresses are freed (as Synapse); its pushers went with
        its devices."""
        await self._store.delete_all(user_id)
