"""Route tables: every endpoint is declared once, with its auth and rate-limit metadata.

Each ``api/client/<area>.py`` module builds a ``RouteTable``; ``api.server`` mounts them
all. Authentication and rate limiting happen centrally from this metadata, never in the
handlers themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from aiohttp import web

if TYPE_CHECKING:
    from peyvand.api.context import RequestContext

Handler = Callable[["RequestContext"], Awaitable[web.StreamResponse]]

# "required": a valid access token; "optional": used when present; "none": ignored;
# "federation": a valid X-Matrix signature by another server (Server-Server API);
# "worker": another process of the deployment, with the deployment's secret as bearer
# token (``api.internal``, issue 21).
AuthKind = Literal["required", "optional", "none", "federation", "worker"]
# Rate-limit bucket: "default" for general traffic, "login" for credential attempts,
# "calls" for call signalling (a bucket of its own: a call's events come in bursts).
LimitClass = Literal["default", "login", "calls"]
# The bucket of one request of a rate-limited route, from its path parameters.
LimitClassOf = Callable[[Mapping[str, str]], LimitClass]
# What an application service's request (its as_token) does with the route's bucket:
# "take" a token as anyone's request does (none if the appservice is registered with
# ``rate_limited: false``), or only "check" that the bucket is not empty, taking nothing,
# whatever ``rate_limited`` says (its registrations, as Synapse: the registration limit
# is checked for every /register, taken only by ordinary accounts).
AppServiceLimit = Literal["take", "check"]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    auth: AuthKind = "required"
    rate_limited: bool = False
    limit_class: LimitClass = "default"
    limit_class_of: LimitClassOf | None = None
    appservice_limit: AppServiceLimit = "take"


@dataclass
class RouteTable:
    routes: list[Route] = field(default_factory=list)

    def route(
        self,
        method: str,
        path: str,
        *,
        auth: AuthKind = "required",
        rate_limited: bool = False,
        limit_class: LimitClass = "default",
        limit_class_of: LimitClassOf | None = None,
        appservice_limit: AppServiceLimit = "take",
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append(
                Route(
                    method,
                    path,
                    handler,
                    auth,
                    rate_limited,
                    limit_class,
                    limit_class_of,
                    appservice_limit,
                )
            )
            return handler

        return register

    def get(
        self,
        path: str,
        *,
        auth: AuthKind = "required",
        rate_limited: bool = False,
        limit_class: LimitClass = "default",
    ) -> Callable[[Handler], Handler]:
        return self.route(
            "GET", path, auth=auth, rate_limited=rate_limited, limit_class=limit_class
        )

    def post(
        self,
        path: str,
        *,
        auth: AuthKind = "required",
        rate_limited: bool = False,
        limit_class: LimitClass = "default",
        limit_class_of: LimitClassOf | None = None,
        appservice_limit: AppServiceLimit = "take",
    ) -> Callable[[Handler], Handler]:
        return self.route(
            "POST",
            path,
            auth=auth,
            rate_limited=rate_limited,
            limit_class=limit_class,
            limit_class_of=limit_class_of,
            appservice_limit=appservice_limit,
        )

    def put(
        self,
        path: str,
        *,
        auth: AuthKind = "required",
        rate_limited: bool = False,
        limit_class: LimitClass = "default",
        limit_class_of: LimitClassOf | None = None,
    ) -> Callable[[Handler], Handler]:
        return self.route(
            "PUT",
            path,
            auth=auth,
            rate_limited=rate_limited,
            limit_class=limit_class,
            limit_class_of=limit_class_of,
        )

    def delete(
        self,
        path: str,
        *,
        auth: AuthKind = "required",
        rate_limited: bool = False,
        limit_class: LimitClass = "default",
    ) -> Callable[[Handler], Handler]:
        return self.route(
            "DELETE", path, auth=auth, rate_limited=rate_limited, limit_class=limit_class
        )


CLIENT_V3 = "/_matrix/client/v3"
CLIENT_PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")
