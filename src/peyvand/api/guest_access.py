"""Which endpoints a guest account may use (Client-Server API, "Guest Access", "Client
behaviour"); every other authenticated endpoint answers guests 403
M_GUEST_ACCESS_FORBIDDEN, checked once in ``api.server`` from the route's path template.

The spec's list, plus what Synapse also lets guests do: join by alias, list their joined
rooms, read capabilities, relations and space hierarchies, and log out.
"""

from __future__ import annotations

import re

from peyvand.api.routing import CLIENT_V3, Route

_PARAMETER = re.compile(r"\{[^}]*\}")
_CLIENT_V1 = "/_matrix/client/v1"
_MEDIA = f"{_CLIENT_V1}/media"

GUEST_ENDPOINTS: frozenset[tuple[str, str]] = frozenset(
    {
        # Retrieving events and media.
        ("GET", f"{CLIENT_V3}/rooms/{{}}/state"),
        ("GET", f"{CLIENT_V3}/rooms/{{}}/context/{{}}"),
        ("GET", f"{CLIENT_V3}/rooms/{{}}/event/{{}}"),
        ("GET", f"{CLIENT_V3}/rooms/{{}}/state/{{}}"),
        ("GET", f"{CLIENT_V3}/rooms/{{}}/state/{{}}/"),
        ("GET", f"{CLIENT_V3}/rooms/{{}}/state/{{}}/{{}}"),
        ("GET", f"{CLIENT_V3}/rooms/{{}}/messages"),
        ("GET", f"{CLIENT_V3}/rooms/{{}}/members"),
        ("GET", f"{CLIENT_V3}/rooms/{{}}/initialSync"),
        ("GET", f"{CLIENT_V3}/sync"),
        ("GET", f"{CLIENT_V3}/events"),
        ("GET", f"{_MEDIA}/download/{{}}/{{}}"),
        ("GET", f"{_MEDIA}/download/{{}}/{{}}/{{}}"),
        ("GET", f"{_MEDIA}/thumbnail/{{}}/{{}}"),
        # Sending events.
        ("POST", f"{CLIENT_V3}/rooms/{{}}/join"),
        ("POST", f"{CLIENT_V3}/rooms/{{}}/leave"),
        ("PUT", f"{CLIENT_V3}/rooms/{{}}/send/{{}}/{{}}"),
        ("PUT", f"{CLIENT_V3}/rooms/{{}}/state/{{}}"),
        ("PUT", f"{CLIENT_V3}/rooms/{{}}/state/{{}}/"),
        ("PUT", f"{CLIENT_V3}/rooms/{{}}/state/{{}}/{{}}"),
        ("PUT", f"{CLIENT_V3}/sendToDevice/{{}}/{{}}"),
        # Account maintenance.
        ("PUT", f"{CLIENT_V3}/profile/{{}}/displayname"),
        ("DELETE", f"{CLIENT_V3}/profile/{{}}/displayname"),
        ("GET", f"{CLIENT_V3}/devices"),
        ("GET", f"{CLIENT_V3}/devices/{{}}"),
        ("PUT", f"{CLIENT_V3}/devices/{{}}"),
        ("GET", f"{CLIENT_V3}/account/whoami"),
        # End-to-end encryption.
        ("POST", f"{CLIENT_V3}/keys/upload"),
        ("POST", f"{CLIENT_V3}/keys/query"),
        ("POST", f"{CLIENT_V3}/keys/claim"),
        # Also allowed by Synapse.
        ("POST", f"{CLIENT_V3}/join/{{}}"),
        ("GET", f"{CLIENT_V3}/joined_rooms"),
        ("GET", f"{CLIENT_V3}/capabilities"),
        ("GET", f"{_CLIENT_V1}/rooms/{{}}/relations/{{}}"),
        ("GET", f"{_CLIENT_V1}/rooms/{{}}/relations/{{}}/{{}}"),
        ("GET", f"{_CLIENT_V1}/rooms/{{}}/relations/{{}}/{{}}/{{}}"),
        ("GET", f"{_CLIENT_V1}/rooms/{{}}/hierarchy"),
        ("POST", f"{CLIENT_V3}/logout"),
        # TURN credentials, unless voip.turn_allow_guests is off (checked by the handler).
        ("GET", f"{CLIENT_V3}/voip/turnServer"),
    }
)


def guest_may_use(route: Route) -> bool:
    return (route.method, _PARAMETER.sub("{}", route.path)) in GUEST_ENDPOINTS
