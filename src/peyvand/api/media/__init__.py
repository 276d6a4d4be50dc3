"""The content repository's HTTP endpoints (Client-Server API, "Content repository")."""

from peyvand.api.media import content_repo
from peyvand.api.routing import RouteTable

MEDIA_ROUTE_TABLES: list[RouteTable] = [content_repo.routes]
