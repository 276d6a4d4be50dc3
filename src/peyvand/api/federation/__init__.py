"""The Server-Server API's endpoints, one module per spec section."""

from peyvand.api.federation import (
    events,
    keys,
    media,
    membership,
    public_rooms,
    query,
    transactions,
    user_keys,
    version,
)
from peyvand.api.routing import RouteTable

FEDERATION_ROUTE_TABLES: list[RouteTable] = [
    version.routes,
    keys.routes,
    transactions.routes,
    membership.routes,
    events.routes,
    query.routes,
    public_rooms.routes,
    user_keys.routes,
    media.routes,
]
