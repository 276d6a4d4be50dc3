"""An appservice asking the homeserver to ping it (Client-Server API v1.7,
``POST /_matrix/client/v1/appservice/{appserviceId}/ping``), which sends
``POST /_matrix/app/v1/ping`` with the ``hs_token`` (Application Service API, "Pinging")
and tells how long the answer took, or what went wrong in the spec's errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from peyvand.errors import Errcode, MatrixError
from peyvand.federation.appservice_client import AppServiceClient, AppServiceError, AppServiceTarget
from peyvand.services.appservice.registration import ApplicationService

__all__ = ["AppServicePing"]

PING_TIME_LIMIT: Final = 30.0  # seconds


class AppServicePing:
    def __init__(
        self,
        client: AppServiceClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        time_limit: float = PING_TIME_LIMIT,
    ) -> None:
        self._client = client
        self._clock = clock
        self._time_limit = time_limit

    async def ping(
        self, caller: ApplicationService | None, appservice_id: str, transaction_id: str | None
    ) -> int:
        """Ping the appservice ``appservice_id`` for itself (``caller`` is the appservice
        whose ``as_token`` made the request); the round trip in milliseconds."""
        if caller is None or caller.id != appservice_id:
            raise MatrixError(
                Errcode.FORBIDDEN, "Provided access token is not the appservice's as_token"
            )
        if caller.url is None:
            raise MatrixError(
                Errcode.URL_NOT_SET, "Application service doesn't have a URL configured"
            )
        started = self._clock()
        try:
            await self._client.ping(
                AppServiceTarget(caller.url, caller.hs_token), transaction_id, self._time_limit
            )
        except AppServiceError as exc:
            raise _ping_error(exc) from None
        return round((self._clock() - started) * 1000)


def _ping_error(exc: AppServiceError) -> MatrixError:
    if exc.kind == "timeout":
        return MatrixError(
            Errcode.CONNECTION_TIMEOUT, "Connection to application service timed out"
        )
    if exc.kind == "connection":
        return MatrixError(Errcode.CONNECTION_FAILED, "Connection to application service failed")
    error = MatrixError(Errcode.BAD_STATUS, f"Ping returned status {exc.status}", body=exc.body)
    # ``status`` is also MatrixError's own keyword (the HTTP status), so set afterwards.
    error.extra["status"] = exc.status
    return error
