"""The Server-Server API's endpoints, one module per spec section."""

from peyvand.api.federation import (
    events,
    hierarchy,
    keys,
    media,
    membership,
    openid,
    public_rooms,
    query,
    timestamp_to_event,
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
    timestamp_to_event.routes,
    hierarchy.routes,
    openid.routes,
]
