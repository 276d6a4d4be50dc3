"""The per-request context handed to every handler."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from peyvand.api.container import Services
from peyvand.api.validation import Body, query_int
from peyvand.errors import Errcode, MatrixError
from peyvand.events.json_input import (
    MAX_FEDERATION_DEPTH,
    NotJson,
    UnacceptableJson,
    check_json_value,
    parse_client_json,
)
from peyvand.services.accounts.requester import Requester
from peyvand.types import ServerName

logger = logging.getLogger(__name__)

SERVICES_KEY = web.AppKey("services", Services)

# On every answer (the browser clients' "CORS" preflight and requests): added by the
# errors middleware, or by ``send_now`` to a response it writes itself.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "X-Requested-With, Content-Type, Authorization, Date",
}


class RequestContext:
    __slots__ = ("_body", "_body_checked", "_origin", "request", "requester", "services")

    def __init__(
        self,
        request: web.Request,
        services: Services,
        requester: Requester | None,
        *,
        origin: ServerName | None = None,
        body: Any = None,
    ) -> None:
        self.request = request
        self.services = services
        self.requester = requester
        self._origin = origin
        self._body: Any = body
        self._body_checked = False

    @property
    def user(self) -> Requester:
        """The authenticated requester (only on routes with ``auth="required"``)."""
        if self.requester is None:
            raise MatrixError(Errcode.MISSING_TOKEN, "Missing access token")
        return self.requester

    @property
    def origin(self) -> ServerName:
        """The requesting server, authenticated by its X-Matrix signature (on routes with
        ``auth="federation"``)."""
        if self._origin is None:
            raise MatrixError(Errcode.UNAUTHORIZED, "Missing X-Matrix authorization")
        return self._origin

    @property
    def origin_server_ts(self) -> int | None:
        """The ``origin_server_ts`` an application service asks for the event a request
        creates (Application Service API, "Timestamp massaging": the ``ts`` query
        parameter, on ``/send`` and ``/state``), or None for "now". Ignored for other
        requesters, as Synapse; 400 M_INVALID_PARAM unless an integer from 0 to the
        canonical JSON maximum."""
        if self.requester is None or self.requester.appservice is None:
            return None
        raw = self.request.query.get("ts")
        if raw is None:
            return None
        if not raw:
            raise MatrixError(Errcode.INVALID_PARAM, "'ts' must be an integer")
        return query_int(self.request.query, "ts", 0)

    @property
    def path(self) -> Mapping[str, str]:
        return self.request.match_info

    @property
    def query(self) -> Mapping[str, str]:
        return self.request.query

    async def raw_json(self, *, items_checked_apart: bool = False) -> Any:
        """The request body parsed as JSON (any type), within the limits of
        ``events.json_input``: M_NOT_JSON if it is not JSON, M_BAD_JSON beyond a limit.

        A body from another server was parsed (and its depth checked) when its signature
        was; the rest of the checks run here, unless the handler checks each item on its
        own (``items_checked_apart``: a transaction's PDUs and EDUs).
        """
        if self._origin is not None:
            if not self._body_checked and not items_checked_apart:
                try:
                    check_json_value(self._body, max_depth=MAX_FEDERATION_DEPTH)
                except UnacceptableJson as exc:
                    raise MatrixError(Errcode.BAD_JSON, str(exc)) from None
                self._body_checked = True
            return self._body
        if self._body is None:
            try:
                self._body = parse_client_json(await self.request.read())
            except NotJson as exc:
                raise MatrixError(Errcode.NOT_JSON, str(exc)) from None
            except UnacceptableJson as exc:
                raise MatrixError(Errcode.BAD_JSON, str(exc)) from None
        return self._body

    async def body(self) -> Body:
        """The request body as a JSON object; M_NOT_JSON if it is not JSON or not an object."""
        data = await self.raw_json()
        if not isinstance(data, dict):
            raise MatrixError(Errcode.NOT_JSON, "Content must be a JSON object.")
        return Body(data)


class JsonResponse(web.Response):
    """A JSON answer that lets go of its body once it is sent.

    aiohttp's loop over a keep-alive connection keeps the connection's last response
    until the next request comes, so each idle connection would otherwise hold the last
    body it was sent: an initial sync's is megabytes (issue 15, peak memory)."""

    async def write_eof(self, data: bytes = b"") -> None:
        await super().write_eof(data)
        self.body = None


async def send_now(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """``response`` written to the client now, and returned for the handler to return.

    A long-poll's answer leaves as soon as it is made: the middlewares' work after the
    handler (metrics, in-flight count, CORS) then runs after the client has it, not
    before (issue 18: the incremental wake). Should anything raise after it, the answer
    the errors middleware makes of it is never written: aiohttp writes nothing after a
    response's end (``tests/api/test_send_now.py`` holds it to that). A client gone
    before or during the write is no error of the server's: the response is returned
    as it is, and aiohttp drops it as it does any answer to a closed connection."""
    response.headers.update(CORS_HEADERS)
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        logger.debug("%s %s: the client went away before its answer", request.method, request.path)
    return response


def json_response(data: Any, status: int = 200) -> web.Response:
    return JsonResponse(body=orjson.dumps(data), status=status, content_type="application/json")
