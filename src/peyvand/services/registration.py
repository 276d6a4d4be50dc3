"""Account registration (Client-Server API, "Account registration", POST /register).

Which flows are offered depends on configuration:

- ``registration.open``: ``m.login.dummy``, plus ``m.login.registration_token`` when tokens
  are configured;
- closed, with tokens: ``m.login.registration_token`` only;
- closed, without tokens: registration is refused with 403 M_FORBIDDEN.

Guest accounts are not supported. Usernames are lower-cased and must match the localpart
grammar for new users (Appendices, "User Identifiers"); like Synapse we reserve localparts
starting with ``_`` (application services) and purely numeric ones (guests).
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping
from typing import Any

from peyvand.config import Config
from peyvand.errors import Errcode, MatrixError, forbidden
from peyvand.services.auth import AuthService, Session, check_new_password
from peyvand.services.uia import DUMMY, REGISTRATION_TOKEN, Flows, StageChecker
from peyvand.storage.accounts import AccountStore
from peyvand.storage.errors import ConflictError
from peyvand.types import UserID, is_valid_localpart

_GENERATED_ALPHABET = string.ascii_lowercase + string.digits
_MAX_USER_ID_BYTES = 255


class RegistrationService:
    def __init__(self, config: Config, accounts: AccountStore, auth: AuthService) -> None:
        self._config = config
        self._accounts = accounts
        self._auth = auth

    @property
    def enabled(self) -> bool:
        """Whether anyone can register at all (openly or with a token)."""
        return self._config.registration.open or bool(self._config.registration.tokens)

    def flows(self) -> Flows:
        """The UIA flows for POST /register; 403 if registration is disabled."""
        reg = self._config.registration
        flows: list[list[str]] = []
        if reg.open:
            flows.append([DUMMY])
        if reg.tokens:
            flows.append([REGISTRATION_TOKEN])
        if not flows:
            raise forbidden("Registration is disabled")
        return flows

    def token_is_valid(self, token: str) -> bool:
        """GET /register/m.login.registration_token/validity; 403 if registration is off."""
        if not self.enabled:
            raise forbidden("Registration is disabled")
        return any(
            secrets.compare_digest(token.encode(), known.encode())
            for known in self._config.registration.tokens
        )

    async def check_username(self, username: str) -> UserID:
        """The user ID for ``username``; M_INVALID_USERNAME or M_USER_IN_USE if unusable."""
        if not username or not is_valid_localpart(username):
            raise MatrixError(
                Errcode.INVALID_USERNAME,
                "User ID can only contain characters a-z, 0-9, or '=_-./+'",
            )
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
    ) -> tuple[UserID, Session | None]:
        """POST /register (kind=user): check the username, run UIA, create the account and,
        unless ``inhibit_login``, log it in."""
        flows = self.flows()
        if username is not None:
            username = username.lower()
            await self.check_username(username)
        if password is not None:
            check_new_password(password)
        await self._auth.uia.check(
            auth,
            flows=flows,
            checkers=self._checkers(),
            operation="register",
            user_id=None,
        )
        if password is None:
            raise MatrixError(Errcode.MISSING_PARAM, "Missing parameter: password")
        if username is None:
            user_id = await self._create_generated(password)
        else:
            user_id = await self._create(username, password, admin=False)
        if inhibit_login:
            return user_id, None
        return user_id, await self._auth.create_session(user_id, device_id, display_name, ip)

    async def register_user(self, localpart: str, password: str, admin: bool) -> UserID:
        """Create an account directly (operator tools such as ``peyvand register-user``)."""
        check_new_password(password)
        return await self._create(localpart, password, admin=admin)

    def _checkers(self) -> dict[str, StageChecker]:
        async def dummy(_: Mapping[str, Any]) -> None:
            return None

        async def registration_token(stage: Mapping[str, Any]) -> None:
            token = stage.get("token")
            if not isinstance(token, str):
                raise MatrixError(Errcode.MISSING_PARAM, "Missing parameter: token")
            if not self.token_is_valid(token):
                raise MatrixError(Errcode.UNAUTHORIZED, "Invalid registration token")

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
