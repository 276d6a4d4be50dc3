"""Pushers (Client-Server API, "Push Notifications": GET /pushers, POST /pushers/set).

A pusher is kept per (user, ``app_id``, ``pushkey``) with the device that set it; when that
device goes (logout, deletion, a password change logging other devices out, deactivation)
its pushers go too, as Synapse ties them to their access token. ``http`` pushers' ``url``
must be a push gateway's notify endpoint, as Synapse requires. ``email`` pushers are
accepted only when the server sends email (``[email] smtp_host``), their ``pushkey`` an
email address that is one of the user's validated addresses (``services.accounts.threepids``;
400 M_THREEPID_NOT_FOUND otherwise, as Synapse), so the server mails no one who did not
ask (``services.push.email`` mails the digests, each with a link that deletes the pusher).

Every change is reported to ``on_change`` (the pusher pool, ``services.push.delivery``,
which sends the notifications).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import orjson
from yarl import URL

from peyvand.errors import Errcode, MatrixError
from peyvand.services.accounts.threepids import canonical_email, check_email_address
from peyvand.storage.pushers import PusherRow, PusherStore, TooManyPushers
from peyvand.types import JsonDict, UserID

# pusher.yaml: "Max length, 64 chars" and "Max length, 512 bytes".
MAX_APP_ID_CHARS: Final = 64
MAX_PUSHKEY_BYTES: Final = 512
# A pusher's ``data``, serialized (each notification to its gateway carries it).
MAX_DATA_BYTES: Final = 4096
# Push Gateway API, "POST /_matrix/push/v1/notify".
NOTIFY_PATH: Final = "/_matrix/push/v1/notify"
_REQUIRED_WITH_KIND: Final = ("app_display_name", "device_display_name", "lang", "data")


PushersChanged = Callable[[UserID], Awaitable[None]]
# (medium, canonical address) -> the user it is validated for (``ThreepidStore.get_owner``).
ThreepidOwner = Callable[[str, str], Awaitable[UserID | None]]


async def _ignore_change(user_id: UserID) -> None:
    return None


class PusherService:
    def __init__(
        self,
        store: PusherStore,
        threepid_owner: ThreepidOwner,
        *,
        on_change: PushersChanged = _ignore_change,
        clock: Callable[[], float] = time.time,
        email_enabled: bool = False,
        max_pushers_per_user: int = 20,
    ) -> None:
        self._store = store
        self._threepid_owner = threepid_owner
        self._max_per_user = max_pushers_per_user
        self._email_enabled = email_enabled
        self._on_change = on_change
        self._clock = clock

    async def get_pushers(self, user_id: UserID) -> list[JsonDict]:
        """GET /pushers: the user's pushers, in the spec's ``Pusher`` shape."""
        return [_pusher_json(row) for row in await self._store.get_pushers(user_id)]

    async def set_pusher(
        self, user_id: UserID, device_id: str | None, body: Mapping[str, Any]
    ) -> None:
        """POST /pushers/set: create, replace, or (``kind`` null) delete a pusher."""
        app_id, pushkey = _required_str(body, "app_id"), _required_str(body, "pushkey")
        if len(app_id) > MAX_APP_ID_CHARS:
            raise MatrixError(
                Errcode.INVALID_PARAM, f"app_id may be at most {MAX_APP_ID_CHARS} characters"
            )
        if len(pushkey.encode()) > MAX_PUSHKEY_BYTES:
            raise MatrixError(
                Errcode.INVALID_PARAM, f"pushkey may be at most {MAX_PUSHKEY_BYTES} bytes"
            )
        if "kind" not in body:
            raise MatrixError(Errcode.MISSING_PARAM, "Missing parameter: kind")
        kind = body["kind"]
        if kind is None:
            await self._store.delete_pusher(user_id, app_id, pushkey)
            await self._on_change(user_id)
            return
        if kind == "email":
            if not self._email_enabled:
                raise MatrixError(Errcode.INVALID_PARAM, "This server sends no email")
            check_email_address(pushkey, "'pushkey' must be an email address")
            if await self._threepid_owner("email", canonical_email(pushkey)) != user_id:
                raise MatrixError(Errcode.THREEPID_NOT_FOUND, "Email not found")
        elif kind != "http":
            raise MatrixError(Errcode.INVALID_PARAM, "Only 'http' and 'email' pushers exist")
        missing = [name for name in _REQUIRED_WITH_KIND if name not in body]
        if missing:
            raise MatrixError(Errcode.MISSING_PARAM, f"Missing parameters: {', '.join(missing)}")
        data = body["data"]
        if not isinstance(data, dict):
            raise MatrixError(Errcode.BAD_JSON, "'data' must be an object")
        if len(orjson.dumps(data)) > MAX_DATA_BYTES:
            raise MatrixError(
                Errcode.INVALID_PARAM, f"'data' may be at most {MAX_DATA_BYTES} bytes"
            )
        if kind == "http":
            _check_url(data.get("url"))
        profile_tag = body.get("profile_tag")
        if profile_tag is not None and not isinstance(profile_tag, str):
            raise MatrixError(Errcode.BAD_JSON, "'profile_tag' must be a string")
        append = body.get("append", False)
        if not isinstance(append, bool):
            raise MatrixError(Errcode.BAD_JSON, "'append' must be a boolean")
        row = PusherRow(
            user_id,
            app_id,
            pushkey,
            device_id,
            kind,
            _required_str(body, "app_display_name"),
            _required_str(body, "device_display_name"),
            profile_tag,
            _required_str(body, "lang"),
            data,
            int(self._clock() * 1000),
        )
        try:
            taken_from = await self._store.set_pusher(
                row, append=append, max_per_user=self._max_per_user
            )
        except TooManyPushers:
            raise MatrixError(
                Errcode.INVALID_PARAM, f"A user may have at most {self._max_per_user} pushers"
            ) from None
        for changed in (user_id, *taken_from):
            await self._on_change(changed)

    async def on_devices_deleted(self, user_id: UserID, device_ids: Sequence[str]) -> None:
        """``AuthService.on_devices_deleted`` hook: the devices' pushers go with them."""
        if device_ids:
            await self._store.delete_for_devices(user_id, device_ids)
            await self._on_change(user_id)


def _required_str(body: Mapping[str, Any], name: str) -> str:
    if name not in body:
        raise MatrixError(Errcode.MISSING_PARAM, f"Missing parameter: {name}")
    value = body[name]
    if not isinstance(value, str):
        raise MatrixError(Errcode.BAD_JSON, f"'{name}' must be a string")
    return value


def _check_url(url: object) -> None:
    """An ``http`` pusher's ``data.url``: an http(s) URL of a gateway's notify endpoint,
    parsed as the sender parses it (yarl), with a host and a port in 1-65535."""
    if not isinstance(url, str):
        raise MatrixError(Errcode.INVALID_PARAM, "'data.url' is required for http pushers")
    try:
        parsed = URL(url)
        port = parsed.port
    except (ValueError, TypeError):
        raise MatrixError(Errcode.INVALID_PARAM, "'data.url' is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise MatrixError(Errcode.INVALID_PARAM, "'data.url' must be an http(s) URL")
    if any(c.isspace() or ord(c) < 32 for c in parsed.host):
        raise MatrixError(Errcode.INVALID_PARAM, "'data.url' has an invalid host")
    if port is None or not 0 < port < 65536:
        raise MatrixError(Errcode.INVALID_PARAM, "'data.url' has an invalid port")
    if parsed.path != NOTIFY_PATH:
        raise MatrixError(Errcode.INVALID_PARAM, f"'data.url' must have the path {NOTIFY_PATH}")


def _pusher_json(row: PusherRow) -> JsonDict:
    pusher: JsonDict = {
        "app_id": row.app_id,
        "pushkey": row.pushkey,
        "kind": row.kind,
        "app_display_name": row.app_display_name,
        "device_display_name": row.device_display_name,
        "lang": row.lang,
        "data": row.data,
    }
    if row.profile_tag is not None:
        pusher["profile_tag"] = row.profile_tag
    return pusher
