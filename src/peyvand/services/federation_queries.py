"""Questions this server asks other servers for its clients (Server-Server API,
"Querying for information": ``/query/profile``), with errors given to the client as
Synapse gives them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from peyvand.errors import Errcode, MatrixError
from peyvand.federation.client import FederationClient, FederationError, FederationHttpError
from peyvand.services.federation_errors import refusal
from peyvand.types import JsonDict, UserID, server_name_of

_V1: Final = "/_matrix/federation/v1"
_QUERY_TIMEOUT: Final = 10.0  # seconds: a client waits on the answer
PROFILE_FIELDS: Final = ("displayname", "avatar_url")


class RemoteQueries:
    """Typed ``/query/profile`` requests to other servers; ``allows``
    says whether this server federates with a server."""

    def __init__(self, client: FederationClient, allows: Callable[[str], bool]) -> None:
        self._client = client
        self._allows = allows

    async def profile(self, user_id: UserID) -> JsonDict:
        """GET /query/profile on the user's server: their ``displayname`` and
        ``avatar_url`` (those that are strings). As in Synapse, the server's 403 or 404 is
        passed on; no answer, another error or a malformed answer is 502."""
        server = server_name_of(user_id)
        if not self._allows(server):
            raise MatrixError(Errcode.NOT_FOUND, "Profile was not found")
        try:
            answer = await self._client.get_json(
                server,
                f"{_V1}/query/profile",
                query={"user_id": user_id},
                timeout=_QUERY_TIMEOUT,
            )
        except FederationHttpError as exc:
            if exc.status in (403, 404):
                raise refusal(exc) from exc
            raise MatrixError(Errcode.UNKNOWN, "Failed to fetch profile", status=502) from exc
        except FederationError as exc:
            raise MatrixError(Errcode.UNKNOWN, "Failed to fetch profile", status=502) from exc
        if not isinstance(answer, dict):
            raise MatrixError(Errcode.UNKNOWN, "Failed to fetch profile", status=502)
        return {k: answer[k] for k in PROFILE_FIELDS if isinstance(answer.get(k), str)}
