"""Client-Server API, one module per spec section."""

from peyvand.api.client import account, devices, login, versions
from peyvand.api.routing import RouteTable

CLIENT_ROUTE_TABLES: list[RouteTable] = [
    versions.routes,
    login.routes,
    account.routes,
    devices.routes,
]
