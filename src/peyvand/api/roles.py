"""Which role of a multi-process deployment serves each endpoint (issue 21, "Routing";
docs/scaling.md). The reverse proxy's configuration is generated from this
(``peyvand deployment nginx``), so every route is placed once, here.

- ``federation_inbound``: the Server-Server API (``/_matrix/federation``, ``/_matrix/key``)
  but the membership events other servers hand in (``send_join``, ``send_leave``,
  ``send_knock``: the room's event writer stores them; ``invite``: the primary writer).
- ``media``: the content repository (``/_matrix/media``, ``/_matrix/client/v1/media``).
- ``client_reader``: Client-Server requests that only read: ``GET``/``HEAD`` routes, and
  the few reads sent as ``POST`` (sliding sync, search, key queries, the user and room
  directories' searches), except those that change something or answer from one
  process's memory (presence, e-mail links).
- ``event_writer``: every other client request (sends, state, membership, account
  changes) and the admin API.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from peyvand.api.routing import CLIENT_PREFIXES, CLIENT_V3, Route, RouteTable
from peyvand.services.federation.forwarded_edus import EDUS_PATH

# Client routes answered by a reader although sent with POST: they change nothing.
_READS_BY_POST = frozenset(
    {
        "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
        f"{CLIENT_V3}/search",
        f"{CLIENT_V3}/keys/query",
        f"{CLIENT_V3}/user_directory/search",
        f"{CLIENT_V3}/publicRooms",
    }
)
# Client GET routes that a reader must not answer: presence lives in one process's
# memory; an e-mail link's GET validates or unsubscribes (a write).
_WRITES_BY_GET = frozenset(
    {
        f"{CLIENT_V3}/presence/{{userId}}/status",
        "/_peyvand/client/email/validate",
        "/_peyvand/client/unsubscribe",
    }
)
# Client routes that only create one event in the room their path names: with several
# event writers, nginx sends them straight to the room's writer
# (``services.timeline.room_owners``); every other write goes to the first writer, which
# hands each event to its room's writer.
_ROOM_EVENT_WRITES = frozenset(
    {
        ("PUT", f"{CLIENT_V3}/rooms/{{roomId}}/send/{{eventType}}/{{txnId}}"),
        ("POST", f"{CLIENT_V3}/rooms/{{roomId}}/send/{{eventType}}"),
        ("PUT", f"{CLIENT_V3}/rooms/{{roomId}}/redact/{{eventId}}/{{txnId}}"),
    }
)
# Federation routes that store a membership event of the room their path names (a
# server joining, leaving or knocking through this one): the room's writer takes them
# (``event_writer``: the one writer, or with several, by room like
# ``_ROOM_EVENT_WRITES``).
_FEDERATION_ROOM_WRITES = frozenset(
    {
        ("PUT", "/_matrix/federation/v2/send_join/{room_id}/{event_id}"),
        ("PUT", "/_matrix/federation/v2/send_leave/{room_id}/{event_id}"),
        ("PUT", "/_matrix/federation/v1/send_knock/{room_id}/{event_id}"),
    }
)
# An invite of a local user by another server: stored (a remote invite, or nothing for a
# room this server is in) and pushed by the primary event writer, which runs the
# pushers and the appservice transactions.
_FEDERATION_PRIMARY_WRITES = frozenset(
    {("PUT", "/_matrix/federation/v2/invite/{room_id}/{event_id}")}
)
# Received receipts and to-device messages another process hands to the primary writer,
# whose streams they are (``services.federation.forwarded_edus``).
_INTERNAL_PRIMARY_WRITES = frozenset({("POST", EDUS_PATH)})
_PARAMETER = re.compile(r"\{([A-Za-z_]+)(?::([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class RoutedPath:
    """One method and path pattern (a regular expression over the decoded path) and the
    role that serves it."""

    method: str
    pattern: str
    role: str
    # Writes only the room's event (``_ROOM_EVENT_WRITES``).
    by_room: bool = False


def client_role(route: Route) -> str:
    """The role serving a Client-Server route."""
    if route.method in ("GET", "HEAD"):
        return "event_writer" if route.path in _WRITES_BY_GET else "client_reader"
    if route.method == "POST" and route.path in _READS_BY_POST:
        return "client_reader"
    return "event_writer"


def federation_role(route: Route) -> str:
    """The role serving a Server-Server route."""
    if (route.method, route.path) in _FEDERATION_ROOM_WRITES | _FEDERATION_PRIMARY_WRITES:
        return "event_writer"
    return "federation_inbound"


def primary_routes(client: Iterable[RouteTable], admin: Iterable[RouteTable]) -> frozenset[str]:
    """The client and admin routes (``Route.path``, method first) that the primary event
    writer takes with several writers (``api.primary_gate``): every write but a room's
    event write, which goes to the room's writer; another server's invite of a local
    user (refused with 503 by a writer that is not the primary: the server retries); and
    the receipts and to-device messages other processes took in."""
    routed = (
        route
        for tables, role_of in ((client, client_role), (admin, lambda _: "event_writer"))
        for table in tables
        for route in table.routes
        if role_of(route) == "event_writer"
        and (route.method, route.path) not in _ROOM_EVENT_WRITES
        and route.method not in ("GET", "HEAD")
    )
    gated = {f"{route.method} {route.path}" for route in routed}
    others = _FEDERATION_PRIMARY_WRITES | _INTERNAL_PRIMARY_WRITES
    return frozenset(gated | {f"{method} {path}" for method, path in others})


def path_pattern(path: str) -> str:
    """An aiohttp path template as an anchored regular expression: ``{name}`` matches
    one segment, ``{name:regex}`` its regex."""
    out: list[str] = []
    position = 0
    for match in _PARAMETER.finditer(path):
        out.append(re.escape(path[position : match.start()]))
        out.append(match.group(2) if match.group(2) is not None else "[^/]+")
        position = match.end()
    out.append(re.escape(path[position:]))
    return "^" + "".join(out) + "$"


def routed_paths(
    client: Iterable[RouteTable],
    media: Iterable[RouteTable],
    federation: Iterable[RouteTable],
    admin: Iterable[RouteTable],
) -> list[RoutedPath]:
    """Every route of the tables with its role, client routes under each of their
    prefixes (v3 and r0), as ``api.server`` mounts them."""
    routed: list[RoutedPath] = []
    families = (
        (client, client_role),
        (media, lambda _: "media"),
        (federation, federation_role),
        (admin, lambda _: "event_writer"),
    )
    for tables, role_of in families:
        for table in tables:
            for route in table.routes:
                role = role_of(route)
                paths = [route.path]
                if route.path.startswith(CLIENT_V3 + "/"):
                    suffix = route.path[len(CLIENT_V3) :]
                    paths = [prefix + suffix for prefix in CLIENT_PREFIXES]
                by_room = (route.method, route.path) in _ROOM_EVENT_WRITES | _FEDERATION_ROOM_WRITES
                routed += [RoutedPath(route.method, path_pattern(p), role, by_room) for p in paths]
    return routed
