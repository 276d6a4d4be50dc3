"""The web application: mounts every route table, authenticates and rate-limits centrally,
and turns every error into the one Matrix JSON error format."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from peyvand.api.access_tokens import access_token
from peyvand.api.client_address import forwarded_middleware, trusted_networks
from peyvand.api.container import Services
from peyvand.api.context import (
    CORS_HEADERS,
    SERVICES_KEY,
    RequestContext,
    json_response,
)
from peyvand.api.guest_access import guest_may_use
from peyvand.api.health import HEALTH_PATH, Health
from peyvand.api.in_flight import InFlight
from peyvand.api.metrics import METRICS_PATH, RouteMetrics, ServerMetrics
from peyvand.api.primary_gate import PrimaryGate
from peyvand.api.ratelimit import RateLimiter
from peyvand.api.routing import (
    CLIENT_PREFIXES,
    CLIENT_V3,
    AppServiceLimit,
    LimitClass,
    Route,
    RouteTable,
)
from peyvand.errors import Errcode, MatrixError
from peyvand.events.json_input import NotJson, UnacceptableJson, parse_federation_json
from peyvand.federation.request_auth import parse_authorization
from peyvand.federation.worker_client import read_secret
from peyvand.services.accounts.requester import Requester
from peyvand.services.appservice.registration import ApplicationService
from peyvand.types import ServerName

logger = logging.getLogger(__name__)

_Middleware = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _client_ip(request: web.Request) -> str:
    """The client's address (behind trusted proxies, as ``api.client_address`` found)."""
    return request.remote or "unknown"


class _Limits:
    def __init__(self, services: Services) -> None:
        cfg = services.config.rate_limits
        self.enabled = cfg.enabled
        self.by_class: dict[LimitClass, RateLimiter] = {
            "default": RateLimiter(cfg.per_second, cfg.burst),
            "login": RateLimiter(cfg.login_per_second, cfg.login_burst),
            "calls": RateLimiter(cfg.calls_per_second, cfg.calls_burst),
        }


async def _authenticate_server(request: web.Request, services: Services) -> tuple[ServerName, Any]:
    """Server-Server API "Request Authentication": the origin of a valid X-Matrix request
    and its parsed JSON body."""
    if not services.config.federation.enabled:
        raise MatrixError(Errcode.UNRECOGNIZED, "Federation is disabled", status=404)
    header = request.headers.get("Authorization")
    if header is None:
        raise MatrixError(Errcode.UNAUTHORIZED, "Missing X-Matrix authorization")
    try:
        auth = parse_authorization(header)
    except ValueError as exc:
        raise MatrixError(Errcode.UNAUTHORIZED, str(exc)) from None
    try:
        content = parse_federation_json(await request.read(), exact_ints=True)
    except NotJson as exc:
        raise MatrixError(Errcode.NOT_JSON, str(exc)) from None
    except UnacceptableJson as exc:
        raise MatrixError(Errcode.BAD_JSON, str(exc)) from None
    if not services.federation.allows(auth.origin):
        raise MatrixError(Errcode.FORBIDDEN, "Federation with this server is not allowed")
    valid = await services.keyring.verify_request(
        auth,
        method=request.method,
        uri=request.raw_path,
        destination=services.config.server_name,
        content=content,
    )
    if not valid:
        raise MatrixError(Errcode.UNAUTHORIZED, "Invalid X-Matrix signature")
    services.federation.heard_from(auth.origin)
    return auth.origin, content


def _check_worker(request: web.Request, secret: str | None) -> None:
    """A request of another process of the deployment (``auth="worker"``) carries the
    deployment's secret as its bearer token (compared in constant time); 403 otherwise,
    and always with no secret or an empty one."""
    token = access_token(request)
    if not secret or token is None or not hmac.compare_digest(token.encode(), secret.encode()):
        raise MatrixError(Errcode.FORBIDDEN, "Only the processes of this server may call this")


def _check_parameters(request: web.Request) -> None:
    """No path or query parameter may contain U+0000: none is a valid identifier, and
    PostgreSQL's TEXT cannot store it (see ``events.json_input`` for bodies)."""
    if any("\x00" in value for value in request.match_info.values()) or any(
        "\x00" in key or "\x00" in value for key, value in request.query.items()
    ):
        raise MatrixError(Errcode.INVALID_PARAM, "Parameters must not contain U+0000")


async def _requester(services: Services, token: str, request: web.Request) -> Requester:
    """Who ``token`` is: an application service (its ``as_token``, Application Service API
    "Identity assertion", with ``user_id`` and ``device_id`` from the query), else the
    owner of the access token."""
    requester = await services.appservice_auth.get_requester(token, request.query, request.remote)
    return requester if requester is not None else await services.auth.get_requester(token)


def _request_appservice(
    services: Services, request: web.Request, requester: Requester | None
) -> ApplicationService | None:
    """The application service making the request: the requester's, or on the routes
    without central auth that take its ``as_token`` (registering and logging in its
    users) the one whose token the request carries."""
    if requester is not None:
        return requester.appservice
    try:
        token = access_token(request)
    except MatrixError:
        return None
    return None if token is None else services.appservices.by_token(token, request.remote)


def _limit_of(route: Route, appservice: ApplicationService | None) -> AppServiceLimit | None:
    """What a request to a rate-limited route does with its bucket: "take" a token, only
    "check" that it is not empty, or nothing (None). An application service registered
    with ``rate_limited: false`` is never limited (Application Service API,
    "Registration"), except where its requests only check (``Route.appservice_limit``)."""
    if appservice is None:
        return "take"
    if route.appservice_limit == "check" or appservice.rate_limited:
        return route.appservice_limit
    return None


def _wrap(route: Route, services: Services, limits: _Limits, secret: str | None) -> _Middleware:
    async def handle(request: web.Request) -> web.StreamResponse:
        _check_parameters(request)
        if route.auth == "worker":
            _check_worker(request, secret)
            return await route.handler(RequestContext(request, services, None))
        if route.auth == "federation":
            origin, content = await _authenticate_server(request, services)
            ctx = RequestContext(request, services, None, origin=origin, body=content)
            return await route.handler(ctx)
        requester = None
        if route.auth != "none":
            token = access_token(request)
            if token is not None:
                requester = await _requester(services, token, request)
                if requester.is_guest and route.auth == "required" and not guest_may_use(route):
                    raise MatrixError(
                        Errcode.GUEST_ACCESS_FORBIDDEN, "Guest access is not allowed here"
                    )
            elif route.auth == "required":
                raise MatrixError(Errcode.MISSING_TOKEN, "Missing access token")
        limit = (
            _limit_of(route, _request_appservice(services, request, requester))
            if limits.enabled and route.rate_limited
            else None
        )
        if limit is not None:
            limit_class = (
                route.limit_class
                if route.limit_class_of is None
                else route.limit_class_of(request.match_info)
            )
            key = (
                requester.user_id
                if requester is not None and limit_class != "login"
                else _client_ip(request)
            )
            limits.by_class[limit_class].check(key, take=limit == "take")
        return await route.handler(RequestContext(request, services, requester))

    return handle


def _measured(handle: _Middleware, metrics: RouteMetrics) -> _Middleware:
    """``handle`` timed, its answer's status counted (an error's, raised to the
    middleware that answers it, too: a Matrix error's status, else 500)."""

    async def measured(request: web.Request) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            response = await handle(request)
            status = response.status
            return response
        except (MatrixError, web.HTTPException) as exc:
            status = exc.status
            raise
        finally:
            metrics.observe(time.perf_counter() - start, status)

    return measured


@web.middleware
async def _errors_middleware(request: web.Request, handler: _Middleware) -> web.StreamResponse:
    if request.method == "OPTIONS":
        # CORS preflight (Client-Server API, "Web Browser Clients"): any path.
        return web.Response(status=204, headers=CORS_HEADERS)
    try:
        response = await handler(request)
    except MatrixError as exc:
        response = json_response(exc.to_json(), status=exc.status)
    except web.HTTPNotFound:
        response = json_response(
            {"errcode": Errcode.UNRECOGNIZED.value, "error": "Unrecognized request"}, 404
        )
    except web.HTTPMethodNotAllowed:
        response = json_response(
            {"errcode": Errcode.UNRECOGNIZED.value, "error": "Unrecognized request"}, 405
        )
    except web.HTTPRequestEntityTooLarge:
        response = json_response(
            {"errcode": Errcode.TOO_LARGE.value, "error": "Request body too large"}, 413
        )
    except web.HTTPException as exc:
        response = json_response(
            {"errcode": Errcode.UNKNOWN.value, "error": exc.reason}, exc.status
        )
    except Exception as exc:
        response = _unexpected_error(request, exc)
    if not response.prepared:
        response.headers.update(CORS_HEADERS)
    return response


def _unexpected_error(request: web.Request, exc: Exception) -> web.Response:
    """The answer to an exception no handler expected. One from a connection the client
    closed (or that was closed for being too slow, see ``api.connections``) is not the
    server's fault: it is logged at debug level, and the answer will not reach anyone."""
    transport = request.transport
    if _client_gone(exc) and (transport is None or transport.is_closing()):
        logger.debug("%s %s: the client went away (%r)", request.method, request.path, exc)
        return json_response(
            {"errcode": Errcode.UNKNOWN.value, "error": "The connection was closed"}, 400
        )
    logger.error("Unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return json_response({"errcode": Errcode.UNKNOWN.value, "error": "Internal server error"}, 500)


def _client_gone(exc: Exception) -> bool:
    """What aiohttp raises when a handler reads from a connection that is gone: a reset
    during the read, or (a read begun after the close) its stream's "Connection closed."."""
    return isinstance(exc, ConnectionError) or (
        isinstance(exc, RuntimeError) and str(exc) == "Connection closed."
    )


def _gated(handle: _Middleware, gate: PrimaryGate) -> _Middleware:
    async def gated(request: web.Request) -> web.StreamResponse:
        with gate.admitted():
            return await handle(request)

    return gated


def build_web_app(
    services: Services,
    tables: Iterable[RouteTable],
    *,
    metrics: ServerMetrics | None = None,
    health: Health | None = None,
    in_flight: InFlight | None = None,
    primary: tuple[PrimaryGate, frozenset[str]] | None = None,
) -> web.Application:
    """The aiohttp application serving every route in ``tables``, with ``metrics`` kept
    and served at ``/_peyvand/metrics`` and ``health`` at ``/health`` when given (outside
    the route tables: no role's, so the reverse proxy's configuration leaves them out),
    and every request counted in ``in_flight`` when given. ``primary``: on one of several
    event writers, its gate and the routes (``api.roles.primary_routes``) it admits only
    as the primary writer."""
    middlewares: list[Middleware] = [_errors_middleware]
    if in_flight is not None:
        middlewares.append(in_flight.middleware)
    trusted = trusted_networks(services.config.http.trusted_proxies)
    if trusted:
        # Behind a reverse proxy: request.remote becomes the client's address.
        middlewares.append(forwarded_middleware(trusted))
    app = web.Application(
        middlewares=middlewares,
        client_max_size=services.config.max_request_size,
        handler_args={"max_field_size": 16 * 1024},
    )
    app[SERVICES_KEY] = services
    worker = services.config.workers.instance
    if worker is not None:
        # Which process of a deployment answered: for operators following a request
        # through the reverse proxy, and for the routing tests.
        async def name_worker(_: web.Request, response: web.StreamResponse) -> None:
            response.headers["X-Peyvand-Worker"] = worker

        app.on_response_prepare.append(name_worker)
    limits = _Limits(services)
    secret_path = services.config.workers.secret_path
    # The deployment's secret, which the internal API's requests carry (issue 21).
    secret = read_secret(secret_path) if secret_path is not None else None
    seen: set[tuple[str, str]] = set()
    for table in tables:
        for route in table.routes:
            paths = [route.path]
            if route.path.startswith(CLIENT_V3 + "/"):
                suffix = route.path[len(CLIENT_V3) :]
                paths = [prefix + suffix for prefix in CLIENT_PREFIXES]
            handle = _wrap(route, services, limits, secret)
            if primary is not None and f"{route.method} {route.path}" in primary[1]:
                handle = _gated(handle, primary[0])
            if metrics is not None:
                handle = _measured(handle, metrics.requests.for_route(route.method, route.path))
            for path in paths:
                if (route.method, path) in seen:
                    raise RuntimeError(f"route declared twice: {route.method} {path}")
                seen.add((route.method, path))
                app.router.add_route(route.method, path, handle)
    if metrics is not None:
        app.router.add_get(METRICS_PATH, metrics.handle)
    if health is not None:
        app.router.add_get(HEALTH_PATH, health.handle)
    return app
