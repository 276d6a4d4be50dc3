"""Client-Server API, one module per spec section."""

from peyvand.api.client import (
    account,
    account_data,
    devices,
    directory,
    filter,
    login,
    profile,
    push_rules,
    read_markers,
    receipts,
    room_keys,
    rooms,
    sync,
    tags,
    typing,
    user_directory,
    versions,
)
from peyvand.api.routing import RouteTable

CLIENT_ROUTE_TABLES: list[RouteTable] = [
    versions.routes,
    login.routes,
    account.routes,
    devices.routes,
    rooms.routes,
    sync.routes,
    typing.routes,
    receipts.routes,
    read_markers.routes,
    account_data.routes,
    tags.routes,
    filter.routes,
    push_rules.routes,
    profile.routes,
    directory.routes,
    user_directory.routes,
    room_keys.routes,
]
