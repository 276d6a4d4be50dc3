"""OpenID tokens for widgets and integrations (Client-Server API "OpenID", openid.yaml;
Server-Server API "OpenID", ``GET /_matrix/federation/v1/openid/userinfo``).

A user asks for a token and hands it to a third party, which asks the user's homeserver
(at ``matrix_server_name``) whom it belongs to. Tokens are valid for an hour, as in
Synapse; only their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from peyvand.storage.openid_tokens import OpenIdTokenStore
from peyvand.types import JsonDict, ServerName, UserID

TOKEN_LIFETIME_MS: Final = 3600 * 1000


@dataclass(frozen=True, slots=True)
class OpenIdToken:
    access_token: str
    matrix_server_name: ServerName
    expires_in: int  # seconds

    def to_json(self) -> JsonDict:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "matrix_server_name": self.matrix_server_name,
            "expires_in": self.expires_in,
        }


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class OpenIdService:
    def __init__(
        self,
        server_name: ServerName,
        store: OpenIdTokenStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._server_name = server_name
        self._store = store
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def request_token(self, user_id: UserID) -> OpenIdToken:
        """A new token for ``user_id``, valid for ``TOKEN_LIFETIME_MS``."""
        token = secrets.token_urlsafe(24)
        now = self._now_ms()
        await self._store.add(_hash(token), user_id, now + TOKEN_LIFETIME_MS, now)
        return OpenIdToken(token, self._server_name, TOKEN_LIFETIME_MS // 1000)

    async def userinfo(self, token: str) -> UserID | None:
        """The user a still valid token was issued to, else None."""
        return await self._store.user_for(_hash(token), self._now_ms())
