"""Account registration (Client-Server API, "Account registration", POST /register).

Which flows are offered depends on configuration and on the registration tokens created
through the admin API (Synapse's "Registration Tokens" admin API):

- ``registration.open``: ``m.login.dummy``, plus ``m.login.registration_token`` when there
  are tokens (configured, or any in the database);
- closed, with tokens: ``m.login.registration_token`` only;
- closed, without tokens: registration is refused with 403 M_FORBIDDEN.

Configured tokens have no limits. A database token counts its uses as Synapse does: a
registration that passes the token stage holds one use (``pending``) until it succeeds
(``completed``) or fails (given back); a token is refused once ``pending + completed``
reaches ``uses_allowed`` or after ``expiry_time``.

Guest accounts ("Guest Access"), when ``registration.allow_guest_access`` is on, get a
numeric localpart and no password; registering with their ``guest_access_token`` and that
localpart as ``username`` upgrades them in place. Usernames are lower-cased and must match
the localpart grammar for new users (Appendices, "User Identifiers"); like Synapse we
reserve localparts starting with ``_`` (application services) and purely numeric ones
(guests).

Application services (Application Service API, "Server admin style permissions")
register the users of their namespaces with ``m.login.application_service`` and their
``as_token``: no UIA, no password, even when registration is closed. No one else may
register a user ID in an appservice's exclusive namespace (400 M_EXCLUSIVE, also from
GET /register/available).
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from peyvand.config import Config
from peyvand.errors import Errcode, MatrixError, forbidden, invalid_param, not_found
from peyvand.services.accounts.auth import AuthService, Session, check_new_password
from peyvand.services.accounts.uia import DUMMY, REGISTRATION_TOKEN, Flows, StageChecker
from peyvand.services.appservice.registration import ApplicationService
from peyvand.services.appservice.registry import AppServiceRegistry
from peyvand.storage.accounts import AccountStore
from peyvand.storage.errors import ConflictError
from peyvand.storage.guests import GuestStore
from peyvand.storage.registration_tokens import RegistrationTokenRow as RegistrationTokenRow
from peyvand.storage.registration_tokens import RegistrationTokenStore
from peyvand.types import JsonDict, UserID, is_valid_localpart, is_valid_user_id

_GENERATED_ALPHABET = string.ascii_lowercase + string.digits
_MAX_USER_ID_BYTES = 255
# The UIA session data naming the account a registration made.
_REGISTERED_USER_ID = "registered_user_id"
# A registration holds a use of its token for at most this long (a registration runs
# within one request; older holds were left by a crash).
PENDING_LIFETIME_MS = 10 * 60 * 1000
# Registration tokens: the characters Synapse allows, its default and maximum length.
TOKEN_ALPHABET = string.ascii_letters + string.digits + "._~-"
DEFAULT_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 64


def registration_token_json(row: RegistrationTokenRow) -> JsonDict:
    """A token as Synapse's admin API shows it."""
    return {
        "token": row.token,
        "uses_allowed": row.uses_allowed,
        "pending": row.pending,
        "completed": row.completed,
        "expiry_time": row.expiry_time,
    }


@dataclass(slots=True)
class _Hold:
    """The use of a database token held by one registration in progress."""

    reservation: str
    token: str | None = None


class RegistrationService:
    def __init__(
        self,
        config: Config,
        accounts: AccountStore,
        auth: AuthService,
        tokens: RegistrationTokenStore,
        guests: GuestStore,
        appservices: AppServiceRegistry,
    ) -> None:
        self._config = config
        self._accounts = accounts
        self._auth = auth
        self._tokens = tokens
        self._guests = guests
        self._appservices = appservices

    async def enabled(self) -> bool:
        """Whether anyone can register at all (openly or with a token)."""
        return await self.flows_or_none() is not None

    async def flows_or_none(self) -> Flows | None:
        reg = self._config.registration
        flows: list[list[str]] = []
        if reg.open:
            flows.append([DUMMY])
        if reg.tokens or await self._tokens.any():
            flows.append([REGISTRATION_TOKEN])
        return flows or None

    async def flows(self) -> Flows:
        """The UIA flows for POST /register; 403 if registration is disabled."""
        flows = await self.flows_or_none()
        if flows is None:
            raise forbidden("Registration is disabled")
        return flows

    async def token_is_valid(self, token: str) -> bool:
        """GET /register/m.login.registration_token/validity; 403 if registration is off."""
        await self.flows()
        if self._configured_token(token):
            return True
        row = await self._tokens.get(token, self._pending_since())
        return row is not None and row.usable(self._auth.now_ms())

    def _configured_token(self, token: str) -> bool:
        return any(
            secrets.compare_digest(token.encode(), known.encode())
            for known in self._config.registration.tokens
        )

    def _pending_since(self) -> int:
        return self._auth.now_ms() - PENDING_LIFETIME_MS

    # Registration tokens admin API (Synapse's "Registration Tokens") ------------------

    async def list_tokens(self, valid: bool | None) -> list[RegistrationTokenRow]:
        """The database tokens, oldest first; with ``valid``, only those usable now
        (True) or only those expired or used up (False)."""
        rows = await self._tokens.list(self._pending_since())
        if valid is None:
            return rows
        now = self._auth.now_ms()
        return [row for row in rows if row.usable(now) is valid]

    async def get_token(self, token: str) -> RegistrationTokenRow:
        row = await self._tokens.get(token, self._pending_since())
        if row is None:
            raise not_found(f"No such registration token: {token}")
        return row

    async def create_token(
        self,
        token: str | None,
        *,
        length: int,
        uses_allowed: int | None,
        expiry_time: int | None,
    ) -> RegistrationTokenRow:
        """A new token: ``token`` as given, or ``length`` random characters."""
        self._check_limits(uses_allowed, expiry_time)
        if token is not None:
            if not 0 < len(token) <= MAX_TOKEN_LENGTH:
                raise invalid_param(
                    "token must not be empty and must not be longer than 64 characters"
                )
            if not set(token) <= set(TOKEN_ALPHABET):
                raise invalid_param("token must consist only of characters A-Z a-z 0-9 . _ ~ -")
            if self._configured_token(token) or not await self._tokens.create(
                token, uses_allowed, expiry_time, self._auth.now_ms()
            ):
                raise invalid_param("Token already exists")
        else:
            if not 0 < length <= MAX_TOKEN_LENGTH:
                raise invalid_param("length must be greater than zero and not greater than 64")
            while True:
                token = "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(length))
                if not self._configured_token(token) and await self._tokens.create(
                    token, uses_allowed, expiry_time, self._auth.now_ms()
                ):
                    break
        return await self.get_token(token)

    async def update_token(
        self, token: str, changes: Mapping[str, int | None]
    ) -> RegistrationTokenRow:
        """Set ``uses_allowed`` and/or ``expiry_time`` (the keys present in ``changes``)."""
        uses_allowed = changes.get("uses_allowed")
        expiry_time = changes.get("expiry_time")
        self._check_limits(uses_allowed, expiry_time)
        if changes and not await self._tokens.update(
            token,
            uses_allowed=uses_allowed,
            set_uses_allowed="uses_allowed" in changes,
            expiry_time=expiry_time,
            set_expiry_time="expiry_time" in changes,
        ):
            raise not_found(f"No such registration token: {token}")
        return await self.get_token(token)

    async def delete_token(self, token: str) -> RegistrationTokenRow:
        """Delete a token; registrations already past the token stage still complete."""
        row = await self._tokens.delete(token)
        if row is None:
            raise not_found(f"No such registration token: {token}")
        return row

    def _check_limits(self, uses_allowed: int | None, expiry_time: int | None) -> None:
        if uses_allowed is not None and uses_allowed < 0:
            raise invalid_param("uses_allowed must be a non-negative integer or null")
        if expiry_time is not None and expiry_time < self._auth.now_ms():
            raise invalid_param("expiry_time must not be in the past")

    async def check_username(self, username: str) -> UserID:
        """The user ID for ``username``; M_INVALID_USERNAME, M_EXCLUSIVE or M_USER_IN_USE if
        unusable."""
        if not username or not is_valid_localpart(username):
            raise MatrixError(
                Errcode.INVALID_USERNAME,
                "User ID can only contain characters a-z, 0-9, or '=_-./+'",
            )
        self._check_not_exclusive(UserID(f"@{username}:{self._config.server_name}"), None)
        if username.startswith("_"):
            raise MatrixError(Errcode.INVALID_USERNAME, "User ID may not begin with '_'")
        if username.isdigit():
            raise MatrixError(
                Errcode.INVALID_USERNAME, "Numeric user IDs are reserved for guest users"
            )
        user_id = UserID(f"@{username}:{self._config.server_name}")
        if len(user_id.encode()) > _MAX_USER_ID_BYTES:
            raise MatrixError(Errcode.INVALID_USERNAME, "User ID is too long")
        if await self._accounts.get_user(user_id) is not None:
            raise MatrixError(Errcode.USER_IN_USE, "User ID already taken")
        return user_id

    async def register(
        self,
        *,
        auth: Mapping[str, Any] | None,
        username: str | None,
        password: str | None,
        device_id: str | None,
        display_name: str | None,
        inhibit_login: bool,
        ip: str | None,
        guest_access_token: str | None = None,
    ) -> tuple[UserID, Session | None]:
        """POST /register (kind=user): check the username, run UIA, create the account (or
        upgrade the guest of ``guest_access_token``) and, unless ``inhibit_login``, log it
        in.

        As in Synapse, the UIA session remembers the first request's parameters (a later
        request may send only ``auth``) and, once the account exists, which account it
        made: a retry with the completed session logs that account in again.
        """
        flows = await self.flows()
        guest = await self._upgradable_guest(guest_access_token, username)
        registered = self._auth.uia.session_data(auth, _REGISTERED_USER_ID)
        if username is not None and guest is None:
            username = username.lower()
            if registered != f"@{username}:{self._config.server_name}":
                await self.check_username(username)
        if password is not None:
            check_new_password(password)
        # A use of a database token, held from its stage until the account exists.
        hold = _Hold(secrets.token_urlsafe(18))
        try:
            done = await self._auth.uia.check(
                auth,
                flows=flows,
                checkers=self._checkers(hold),
                operation="register",
                user_id=None,
                clientdict={
                    "username": username,
                    "password": password,
                    "device_id": device_id,
                    "initial_device_display_name": display_name,
                    "inhibit_login": inhibit_login or None,
                },
                reusable=True,
            )
            remembered = done.clientdict
            username, password = remembered.get("username"), remembered.get("password")
            device_id = remembered.get("device_id")
            display_name = remembered.get("initial_device_display_name")
            inhibit_login = bool(remembered.get("inhibit_login"))
            if password is None:
                raise MatrixError(Errcode.MISSING_PARAM, "Missing parameter: password")
            if registered is not None:
                user_id = UserID(registered)
            elif guest is not None:
                user_id = await self._upgrade(guest, password)
            elif username is None:
                user_id = await self._create_generated(password)
            else:
                user_id = await self._create(username, password, admin=False)
            self._auth.uia.set_session_data(done.session_id, _REGISTERED_USER_ID, user_id)
        except BaseException:
            if hold.token is not None:
                await self._tokens.release(hold.reservation)
            raise
        if hold.token is not None:
            await self._tokens.complete(hold.reservation, hold.token)
        if inhibit_login:
            return user_id, None
        return user_id, await self._auth.create_session(user_id, device_id, display_name, ip)

    async def register_appservice_user(
        self,
        appservice: ApplicationService,
        username: str | None,
        *,
        device_id: str | None,
        display_name: str | None,
        inhibit_login: bool,
        ip: str | None,
    ) -> tuple[UserID, Session | None]:
        """POST /register with ``m.login.application_service`` by ``appservice``
        (Application Service API, "Server admin style permissions"): a passwordless
        account for ``username`` in its user namespaces (or its bot), logged in unless
        ``inhibit_login``. 400 M_EXCLUSIVE outside them or inside another appservice's
        exclusive one, M_USER_IN_USE if taken; an appservice that manages its devices
        itself (MSC4190) must inhibit the login (400 M_APPSERVICE_LOGIN_UNSUPPORTED, as
        the spec asks of servers without the legacy login API, and as Synapse)."""
        if username is None:
            raise MatrixError(Errcode.MISSING_PARAM, "Missing parameter: username")
        if appservice.msc4190 and not inhibit_login:
            raise MatrixError(
                Errcode.APPSERVICE_LOGIN_UNSUPPORTED,
                "This application service manages its devices (MSC4190): "
                "inhibit_login must be true",
            )
        user_id = UserID(f"@{username}:{self._config.server_name}")
        # The historical grammar, as Synapse accepts any localpart of an appservice's
        # namespace: bridges name ghosts after remote IDs (``@_slack_T0AB_U0CD``).
        if not is_valid_user_id(user_id) or len(user_id.encode()) > _MAX_USER_ID_BYTES:
            raise MatrixError(Errcode.INVALID_USERNAME, "Invalid user ID localpart")
        if not appservice.is_user_in_namespace(user_id):
            raise MatrixError(
                Errcode.EXCLUSIVE, "This user ID is outside the application service's namespaces"
            )
        self._check_not_exclusive(user_id, appservice)
        try:
            await self._accounts.create_user(
                user_id, None, is_admin=False, created_ts=self._auth.now_ms()
            )
        except ConflictError:
            raise MatrixError(Errcode.USER_IN_USE, "User ID already taken") from None
        if inhibit_login:
            return user_id, None
        return user_id, await self._auth.create_session(user_id, device_id, display_name, ip)

    def _check_not_exclusive(self, user_id: UserID, allowed: ApplicationService | None) -> None:
        """400 M_EXCLUSIVE if an appservice other than ``allowed`` claims ``user_id``
        exclusively."""
        if any(
            allowed is None or service.id != allowed.id
            for service in self._appservices.exclusive_owners_of_user(user_id)
        ):
            raise MatrixError(
                Errcode.EXCLUSIVE, "This user ID is reserved by an application service"
            )

    async def register_guest(
        self, *, device_id: str | None, display_name: str | None, ip: str | None
    ) -> Session:
        """POST /register?kind=guest: a new guest account, logged in; 403
        M_GUEST_ACCESS_FORBIDDEN unless ``registration.allow_guest_access``."""
        if not self._config.registration.allow_guest_access:
            raise MatrixError(Errcode.GUEST_ACCESS_FORBIDDEN, "Guest access is disabled")
        while True:
            # Numeric localparts are reserved for guests (check_username refuses them).
            localpart = str(secrets.randbelow(9 * 10**11) + 10**11)
            user_id = UserID(f"@{localpart}:{self._config.server_name}")
            try:
                await self._guests.create_guest(user_id, self._auth.now_ms())
            except ConflictError:
                continue
            return await self._auth.create_session(user_id, device_id, display_name, ip)

    async def _upgradable_guest(
        self, guest_access_token: str | None, username: str | None
    ) -> UserID | None:
        """The guest that ``guest_access_token`` names, which may only be upgraded under
        its own localpart ("Guest Access": ``username`` is then required)."""
        if guest_access_token is None:
            return None
        requester = await self._auth.get_requester(guest_access_token)
        if not requester.is_guest:
            raise forbidden("guest_access_token does not belong to a guest")
        if username is None or f"@{username.lower()}:{self._config.server_name}" != (
            requester.user_id
        ):
            raise forbidden("A guest can only be upgraded under its own username")
        # As any new account: not inside an appservice's exclusive namespace (Synapse
        # checks an upgrade too).
        self._check_not_exclusive(requester.user_id, None)
        return requester.user_id

    async def _upgrade(self, user_id: UserID, password: str) -> UserID:
        """The guest becomes a full account with ``password``; its guest sessions end."""
        if not await self._guests.upgrade(user_id, await self._auth.hash_password(password)):
            raise forbidden("This account is no longer a guest")
        await self._auth.logout_all(user_id)
        return user_id

    async def register_user(self, localpart: str, password: str, admin: bool) -> UserID:
        """Create an account directly (operator tools such as ``peyvand register-user``)."""
        check_new_password(password)
        return await self._create(localpart, password, admin=admin)

    def _checkers(self, hold: _Hold) -> dict[str, StageChecker]:
        async def dummy(_: Mapping[str, Any]) -> None:
            return None

        async def registration_token(stage: Mapping[str, Any]) -> None:
            token = stage.get("token")
            if token is None:
                raise MatrixError(Errcode.MISSING_PARAM, "Missing parameter: token")
            if not isinstance(token, str):
                raise invalid_param("Registration token must be a string")
            if self._configured_token(token):
                return
            if hold.token is not None:  # a stage repeated within one request
                await self._tokens.release(hold.reservation)
                hold.token = None
            now = self._auth.now_ms()
            if not await self._tokens.reserve(
                token, hold.reservation, now, now - PENDING_LIFETIME_MS
            ):
                raise MatrixError(Errcode.UNAUTHORIZED, "Invalid registration token")
            hold.token = token

        return {DUMMY: dummy, REGISTRATION_TOKEN: registration_token}

    async def _create(self, localpart: str, password: str, *, admin: bool) -> UserID:
        user_id = await self.check_username(localpart)
        password_hash = await self._auth.hash_password(password)
        try:
            await self._accounts.create_user(
                user_id, password_hash, is_admin=admin, created_ts=self._auth.now_ms()
            )
        except ConflictError:
            raise MatrixError(Errcode.USER_IN_USE, "User ID already taken") from None
        return user_id

    async def _create_generated(self, password: str) -> UserID:
        """A server-chosen localpart when the client gave no username."""
        while True:
            localpart = "u" + "".join(secrets.choice(_GENERATED_ALPHABET) for _ in range(11))
            try:
                return await self._create(localpart, password, admin=False)
            except MatrixError as exc:
                if exc.errcode is not Errcode.USER_IN_USE:
                    raise
