"""Authentication: access tokens, passwords, login and logout, devices, UIA stages.

Client-Server API sections "Client Authentication", "Login", "Account registration and
management" and "Device Management". Access tokens resolve through an in-memory cache that
is invalidated right where tokens are removed (logout, logout/all, device deletion, password
change, deactivation); in a deployment of several processes, the others are told at once
(``on_tokens_revoked``, ``tokens_revoked_elsewhere``: issue 21), and a token read there is
read again after a few seconds (``read_tokens_again_after``), so a revocation whose
message a process missed holds there within that time at the latest. Password hashing is
bcrypt, run in the default executor so a login storm never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import secrets
import string
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bcrypt

from peyvand.config import Config
from peyvand.errors import Errcode, MatrixError, bad_json, forbidden, not_found
from peyvand.lru import LRU
from peyvand.services.accounts.requester import Requester
from peyvand.services.accounts.uia import PASSWORD, UserInteractiveAuth
from peyvand.services.appservice.registration import ApplicationService
from peyvand.storage.accounts import AccountStore, DeviceRow
from peyvand.storage.errors import NotFoundError
from peyvand.types import DeviceID, JsonDict, UserID

# bcrypt only reads the first 72 bytes (older bcrypt and Synapse truncated silently;
# bcrypt 5 raises instead), so truncate explicitly to stay compatible with their hashes.
_BCRYPT_MAX_BYTES = 72
MAX_PASSWORD_LENGTH = 512
_TOKEN_CACHE_SIZE = 50_000
_FILTER_CACHE_SIZE = 10_000
_DEVICE_ID_ALPHABET = string.ascii_uppercase
_INVALID_LOGIN = "Invalid username or password"

# A device as the service hands it to the API (an immutable row).
Device = DeviceRow
# Run after devices are deleted (logout, device deletion, password change, deactivation)
# and after a login issues a token for a device: to-device inboxes, device lists, keys.
DevicesDeletedHook = Callable[[UserID, Sequence[str]], Awaitable[None]]
DeviceCreatedHook = Callable[[UserID, DeviceID], Awaitable[None]]
# Run after an account is deactivated (whether or not it had devices).
DeactivatedHook = Callable[[UserID], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Session:
    """A freshly issued access token: the body of a successful /login or /register."""

    user_id: UserID
    device_id: DeviceID
    access_token: str


def user_from_identifier(auth: Mapping[str, Any]) -> str:
    """The user named by a login or UIA dict: ``identifier`` of type ``m.id.user`` or the
    deprecated top-level ``user`` ("Identifier types", "Login")."""
    identifier = auth.get("identifier")
    if identifier is not None:
        if not isinstance(identifier, dict):
            raise bad_json("'identifier' must be an object")
        if identifier.get("type") != "m.id.user":
            raise MatrixError(Errcode.UNKNOWN, "Unsupported identifier type")
        user = identifier.get("user")
    else:
        user = auth.get("user")
        if user is None:
            raise MatrixError(Errcode.MISSING_PARAM, "Missing parameter: identifier")
    if not isinstance(user, str):
        raise bad_json("'user' must be a string")
    return user


def check_new_password(password: str) -> None:
    if not password:
        raise MatrixError(Errcode.WEAK_PASSWORD, "Password must not be empty")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise MatrixError(Errcode.INVALID_PARAM, "Password too long")


def _hash_sync(password: str, rounds: int) -> str:
    raw = password.encode()[:_BCRYPT_MAX_BYTES]
    return bcrypt.hashpw(raw, bcrypt.gensalt(rounds)).decode("ascii")


def _check_sync(password: str, password_hash: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode()[:_BCRYPT_MAX_BYTES], password_hash.encode())
    except ValueError:  # a malformed stored hash
        return False


def new_device_id() -> DeviceID:
    return DeviceID("".join(secrets.choice(_DEVICE_ID_ALPHABET) for _ in range(10)))


class AuthService:
    def __init__(
        self,
        config: Config,
        accounts: AccountStore,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._accounts = accounts
        self._clock = clock
        self._monotonic = monotonic
        self.uia = UserInteractiveAuth()
        # Each token's requester, expiry (milliseconds, or None) and the time
        # (``monotonic``) after which it is read again, when ``_token_seconds`` is set.
        self._tokens: LRU[str, tuple[Requester, int | None, float]] = LRU(_TOKEN_CACHE_SIZE)
        self._token_seconds: float | None = None
        # Bumped on every revocation, so a lookup racing a logout is not cached.
        self._revocations = 0
        # Filters never change (their ids are content hashes), so caching them is safe.
        self._filters: LRU[tuple[UserID, str], JsonDict] = LRU(_FILTER_CACHE_SIZE)
        self.on_devices_deleted: list[DevicesDeletedHook] = []
        self.on_device_created: list[DeviceCreatedHook] = []
        # A renamed device: its display name is part of the device list others query.
        self.on_device_renamed: list[DeviceCreatedHook] = []
        self.on_deactivated: list[DeactivatedHook] = []
        # Awaited with the user whose tokens were revoked here, before the revocation
        # returns (a deployment tells its other processes, which keep tokens: issue 21).
        self.on_tokens_revoked: list[Callable[[UserID], Awaitable[None]]] = []

    # Access tokens ("Using access tokens") --------------------------------------------

    async def get_requester(self, token: str) -> Requester:
        """Who ``token`` belongs to; 401 M_UNKNOWN_TOKEN if unknown, revoked, expired or
        the account is deactivated."""
        cached = self._tokens.get(token)
        if cached is not None and (self._token_seconds is None or self._monotonic() < cached[2]):
            return self._unexpired(cached[0], cached[1])
        revocations = self._revocations
        # Trusted from before the read: a revocation committed meanwhile is reached in time.
        read_again_at = self._monotonic() + self._token_seconds if self._token_seconds else 0.0
        owner = await self._accounts.get_token_owner(token)
        if owner is None or owner.deactivated:
            raise MatrixError(Errcode.UNKNOWN_TOKEN, "Unknown access token", soft_logout=False)
        requester = Requester(
            owner.user_id, owner.device_id, owner.token_id, owner.is_admin, owner.is_guest
        )
        if revocations == self._revocations:
            self._tokens.put(token, (requester, owner.valid_until_ms, read_again_at))
        return self._unexpired(requester, owner.valid_until_ms)

    def _unexpired(self, requester: Requester, valid_until_ms: int | None) -> Requester:
        # As Synapse: an expired token is a soft logout (the client may log in again).
        if valid_until_ms is not None and self.now_ms() > valid_until_ms:
            raise MatrixError(Errcode.UNKNOWN_TOKEN, "Access token has expired", soft_logout=True)
        return requester

    async def _forget_tokens(self, user_id: UserID, tokens: Sequence[str]) -> None:
        self._revocations += 1
        for token in tokens:
            self._tokens.pop(token)
        if tokens:
            for hook in self.on_tokens_revoked:
                await hook(user_id)

    def read_tokens_again_after(self, seconds: float) -> None:
        """In a deployment of several processes (issue 21): a token read here is read
        from the database again ``seconds`` after it was read (one query per token in
        use per ``seconds``), so a revocation made in another process holds here within
        ``seconds`` even when its message never arrived. Without it (one process), a
        token is kept until revoked here or pushed out of the cache."""
        self._token_seconds = seconds

    def tokens_revoked_elsewhere(self, user_ids: Collection[str] | None) -> None:
        """Another process of a deployment revoked tokens of these users (None: of
        anyone): forget every token of theirs kept here, so the next request using one
        reads the database (issue 21)."""
        self._revocations += 1
        for token in self._tokens:
            kept = self._tokens.peek(token)
            if user_ids is None or (kept is not None and kept[0].user_id in user_ids):
                self._tokens.pop(token)

    async def create_session(
        self,
        user_id: UserID,
        device_id: str | None = None,
        display_name: str | None = None,
        ip: str | None = None,
    ) -> Session:
        """Issue an access token for ``device_id`` (a new device when None or unknown)."""
        device = DeviceID(device_id) if device_id else new_device_id()
        token = "pv_" + secrets.token_urlsafe(32)
        _, revoked = await self._accounts.create_access_token(
            user_id, device, token, display_name=display_name, ip=ip, now_ms=self.now_ms()
        )
        await self._forget_tokens(user_id, revoked)
        for hook in self.on_device_created:
            await hook(user_id, device)
        return Session(user_id, device, token)

    async def login_as(
        self, admin_id: UserID, user_id: UserID, valid_until_ms: int | None
    ) -> Session:
        """The admin API "Login as a user": an access token for the local ``user_id`` without
        a device (the user's device list does not show it and no device-list update is
        sent), refused after ``valid_until_ms`` if given. Its ``device_id`` is fresh and
        names no device. As Synapse, an admin cannot log in as themselves this way;
        unknown users are 404, deactivated ones 403 M_USER_DEACTIVATED."""
        if user_id == admin_id:
            raise MatrixError(Errcode.INVALID_PARAM, "Cannot use admin API to login as self")
        row = await self._accounts.get_user(user_id)
        if row is None:
            raise not_found("User not found")
        if row.deactivated:
            raise MatrixError(Errcode.USER_DEACTIVATED, "This account has been deactivated")
        device = new_device_id()
        token = "pv_" + secrets.token_urlsafe(32)
        await self._accounts.create_deviceless_token(
            user_id, device, token, valid_until_ms=valid_until_ms, now_ms=self.now_ms()
        )
        return Session(user_id, device, token)

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    # Passwords -------------------------------------------------------------------------

    async def hash_password(self, password: str) -> str:
        rounds = self._config.registration.bcrypt_rounds
        return await asyncio.get_running_loop().run_in_executor(None, _hash_sync, password, rounds)

    async def _password_matches(self, password: str, password_hash: str | None) -> bool:
        if password_hash is None:
            return False
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, _check_sync, password, password_hash)

    def qualify(self, user: str) -> UserID:
        """A full local user ID from a localpart or MXID (lower-cased, as registered)."""
        if not user.startswith("@"):
            return UserID(f"@{user.lower()}:{self._config.server_name}")
        localpart, _, server = user[1:].partition(":")
        return UserID(f"@{localpart.lower()}:{server}")

    async def check_password(self, user: str, password: str) -> UserID:
        """The user whose password this is; 403 M_FORBIDDEN otherwise (not saying why).

        A deactivated account has no password, so it cannot log in; an account marked
        deactivated that still has one gets 403 M_USER_DEACTIVATED, as in Synapse.
        """
        user_id = self.qualify(user)
        row = await self._accounts.get_user(user_id)
        if row is None or not await self._password_matches(password, row.password_hash):
            raise forbidden(_INVALID_LOGIN)
        if row.deactivated:
            raise MatrixError(Errcode.USER_DEACTIVATED, "This account has been deactivated")
        return row.user_id

    # Login and logout ("Login", "Logout") -----------------------------------------------

    async def login_with_password(
        self,
        user: str,
        password: str,
        *,
        device_id: str | None,
        display_name: str | None,
        ip: str | None,
    ) -> Session:
        """POST /login with ``m.login.password``."""
        user_id = await self.check_password(user, password)
        return await self.create_session(user_id, device_id, display_name, ip)

    async def login_as_appservice_user(
        self,
        appservice: ApplicationService,
        user: str,
        *,
        device_id: str | None,
        display_name: str | None,
        ip: str | None,
    ) -> Session:
        """POST /login with ``m.login.application_service``, the request authenticated by
        the appservice's ``as_token`` (Application Service API, "Server admin style
        permissions"): a session for a registered, active user of its namespaces (or its
        bot), without a password. 400 M_EXCLUSIVE outside them, 403 M_FORBIDDEN for a user
        never registered. An appservice that manages its users' devices itself (MSC4190)
        gets 400 M_APPSERVICE_LOGIN_UNSUPPORTED, as in Synapse: it creates devices with
        PUT /devices/{deviceId} instead."""
        if appservice.msc4190:
            raise MatrixError(
                Errcode.APPSERVICE_LOGIN_UNSUPPORTED,
                "This application service manages its devices (MSC4190): it cannot log in",
            )
        user_id = self.qualify(user)
        if not appservice.is_user_in_namespace(user_id):
            raise MatrixError(
                Errcode.EXCLUSIVE, "This user is outside the application service's namespaces"
            )
        row = await self._accounts.get_user(user_id)
        if row is None:
            raise forbidden("The application service has not registered this user")
        if row.deactivated:
            raise MatrixError(Errcode.USER_DEACTIVATED, "This account has been deactivated")
        return await self.create_session(row.user_id, device_id, display_name, ip)

    async def logout(self, requester: Requester) -> None:
        """Revoke the requester's token and delete its device (a device-less session,
        from "login as a user", has none: nothing else changes)."""
        device = await self._accounts.get_device(requester.user_id, requester.device_id)
        await self._forget_tokens(
            requester.user_id,
            await self._accounts.delete_devices(requester.user_id, [requester.device_id]),
        )
        if device is not None:
            await self._devices_deleted(requester.user_id, [requester.device_id])

    async def logout_all(self, user_id: UserID) -> None:
        """Revoke every token of a user and delete all their devices."""
        device_ids = [d.device_id for d in await self._accounts.get_devices(user_id)]
        await self._forget_tokens(user_id, await self._accounts.delete_all_devices(user_id))
        await self._devices_deleted(user_id, device_ids)

    # UIA with the account password -----------------------------------------------------

    async def require_password(
        self, requester: Requester, auth: Mapping[str, Any] | None, operation: str
    ) -> None:
        """Guard ``operation`` with UIA, one flow: ``m.login.password`` for the requester."""

        async def password_stage(stage: Mapping[str, Any]) -> None:
            password = stage.get("password")
            if not isinstance(password, str):
                raise MatrixError(Errcode.MISSING_PARAM, "Missing parameter: password")
            user_id = await self.check_password(user_from_identifier(stage), password)
            if user_id != requester.user_id:
                raise forbidden(_INVALID_LOGIN)

        await self.uia.check(
            auth,
            flows=[[PASSWORD]],
            checkers={PASSWORD: password_stage},
            operation=operation,
            user_id=requester.user_id,
        )

    # Account management ("Account registration and management") ------------------------

    async def change_password(
        self, requester: Requester, new_password: str, *, logout_devices: bool
    ) -> None:
        """Set a new password; with ``logout_devices`` every other device is logged out."""
        check_new_password(new_password)
        password_hash = await self.hash_password(new_password)
        devices = await self._accounts.get_devices(requester.user_id) if logout_devices else []
        others = [d.device_id for d in devices if d.device_id != requester.device_id]
        revoked = await self._accounts.set_password_hash(
            requester.user_id,
            password_hash,
            keep_device=requester.device_id if logout_devices else None,
        )
        await self._forget_tokens(requester.user_id, revoked)
        await self._devices_deleted(requester.user_id, others)

    async def deactivate(self, user_id: UserID) -> None:
        """Deactivate an account: no password, no devices, no tokens, ever again."""
        device_ids = [d.device_id for d in await self._accounts.get_devices(user_id)]
        await self._forget_tokens(user_id, await self._accounts.deactivate_user(user_id))
        await self._devices_deleted(user_id, device_ids)
        for hook in self.on_deactivated:
            await hook(user_id)

    # Devices ("Device Management") -----------------------------------------------------

    async def get_devices(self, user_id: UserID) -> list[Device]:
        return await self._accounts.get_devices(user_id)

    async def get_device(self, user_id: UserID, device_id: str) -> Device:
        device = await self._accounts.get_device(user_id, device_id)
        if device is None:
            raise not_found("Device not found")
        return device

    async def rename_device(
        self, user_id: UserID, device_id: str, display_name: str | None
    ) -> None:
        try:
            await self._accounts.set_device_display_name(user_id, device_id, display_name)
        except NotFoundError:
            raise not_found("Device not found") from None
        for hook in self.on_device_renamed:
            await hook(user_id, DeviceID(device_id))

    async def upsert_device(
        self, user_id: UserID, device_id: str, display_name: str | None
    ) -> bool:
        """PUT /devices/{deviceId} by an application service (Application Service API,
        "Device management", MSC4190): create the device, without an access token, or
        rename it. Returns whether it was created."""
        created = await self._accounts.upsert_device(user_id, device_id, display_name)
        if created or display_name is not None:
            hooks = self.on_device_created if created else self.on_device_renamed
            for hook in hooks:
                await hook(user_id, DeviceID(device_id))
        return created

    async def delete_devices(self, user_id: UserID, device_ids: Sequence[str]) -> None:
        """Delete devices and log them out; unknown device IDs are ignored (as Synapse)."""
        await self._forget_tokens(user_id, await self._accounts.delete_devices(user_id, device_ids))
        await self._devices_deleted(user_id, device_ids)

    async def _devices_deleted(self, user_id: UserID, device_ids: Sequence[str]) -> None:
        if device_ids:
            for hook in self.on_devices_deleted:
                await hook(user_id, device_ids)

    # Filters ("Filtering"): kept here so /sync resolves a filter ID without a query ------

    async def add_filter(self, user_id: UserID, filter_json: JsonDict) -> str:
        """Store a (validated) filter; the same filter always gets the same ID."""
        return await self._accounts.add_filter(user_id, filter_json)

    async def get_filter(self, user_id: UserID, filter_id: str) -> JsonDict | None:
        """A stored filter of ``user_id``, or None. Callers must not mutate the result."""
        key = (user_id, filter_id)
        cached = self._filters.get(key)
        if cached is not None:
            return cached
        stored = await self._accounts.get_filter(user_id, filter_id)
        if stored is not None:
            self._filters.put(key, stored)
        return stored
