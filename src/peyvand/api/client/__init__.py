"""Client-Server API, one module per spec section."""

from peyvand.api.routing import RouteTable

CLIENT_ROUTE_TABLES: list[RouteTable] = []
