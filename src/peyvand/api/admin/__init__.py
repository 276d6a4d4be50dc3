"""Server administration endpoints, on Synapse's admin API paths so operators' tools work."""

from peyvand.api.admin import (
    appservices,
    audit,
    export,
    legal_hold,
    media,
    policy_lists,
    registration_tokens,
    reports,
    retention,
    server_notices,
    user_login,
    users,
)
from peyvand.api.routing import RouteTable

ADMIN_ROUTE_TABLES: list[RouteTable] = [
    media.routes,
    audit.routes,
    legal_hold.routes,
    export.routes,
    reports.routes,
    policy_lists.routes,
    retention.routes,
    users.routes,
    user_login.routes,
    registration_tokens.routes,
    server_notices.routes,
    appservices.routes,
]
