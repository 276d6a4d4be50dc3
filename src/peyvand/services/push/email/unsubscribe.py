"""The unsubscribe link of notification emails: a URL under ``UNSUBSCRIBE_PATH`` naming
the email pusher (user, ``app_id``, ``pushkey``) with a token only this server can make,
an HMAC-SHA256 of the three under a key derived from the server's signing key. Following
it deletes that pusher (``api.client.unsubscribe``), as Synapse's
``/_synapse/client/unsubscribe`` does; nothing else is needed to use it, so the token is
what keeps others from unsubscribing a user.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode

from signedjson.types import SigningKey
from unpaddedbase64 import decode_base64, encode_base64

from peyvand.errors import Errcode, MatrixError
from peyvand.types import UserID

UNSUBSCRIBE_PATH: Final = "/_peyvand/client/unsubscribe"
_KEY_CONTEXT: Final = b"peyvand email unsubscribe v1\0"


@dataclass(frozen=True, slots=True)
class EmailPusherKey:
    user_id: UserID
    app_id: str
    pushkey: str


class UnsubscribeLinks:
    def __init__(self, signing_key: SigningKey, base_url: str) -> None:
        self._key = hashlib.sha256(_KEY_CONTEXT + signing_key.encode()).digest()
        self._base_url = base_url.rstrip("/")

    def link(self, pusher: EmailPusherKey) -> str:
        """The URL that deletes ``pusher``."""
        query = urlencode(
            {
                "user_id": pusher.user_id,
                "app_id": pusher.app_id,
                "pushkey": pusher.pushkey,
                "token": self._token(pusher),
            }
        )
        return f"{self._base_url}{UNSUBSCRIBE_PATH}?{query}"

    def verify(self, pusher: EmailPusherKey, token: str) -> bool:
        """Whether ``token`` is the one this server made for ``pusher``."""
        try:
            given = decode_base64(token)
        except ValueError:
            return False
        return hmac.compare_digest(given, self._mac(pusher))

    def _token(self, pusher: EmailPusherKey) -> str:
        return encode_base64(self._mac(pusher), urlsafe=True)

    def _mac(self, pusher: EmailPusherKey) -> bytes:
        message = "\0".join((pusher.user_id, pusher.app_id, pusher.pushkey)).encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()


DeletePusher = Callable[[EmailPusherKey], Awaitable[None]]


class EmailUnsubscribe:
    """Following an unsubscribe link (``UNSUBSCRIBE_PATH``)."""

    def __init__(self, links: UnsubscribeLinks, delete_pusher: DeletePusher) -> None:
        self._links = links
        self._delete_pusher = delete_pusher

    async def unsubscribe(self, pusher: EmailPusherKey, token: str) -> None:
        """Delete ``pusher`` if ``token`` is its link's (403 M_FORBIDDEN otherwise);
        deleting one already gone is no error, so a link followed twice still works."""
        if not self._links.verify(pusher, token):
            raise MatrixError(Errcode.FORBIDDEN, "Invalid unsubscribe link")
        await self._delete_pusher(pusher)
