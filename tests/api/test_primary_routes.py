"""Which routes only the primary event writer admits with several writers (issue 21)."""

from __future__ import annotations

from peyvand.api.admin import ADMIN_ROUTE_TABLES
from peyvand.api.client import CLIENT_ROUTE_TABLES
from peyvand.api.roles import primary_routes
from peyvand.services.federation.forwarded_edus import EDUS_PATH


def test_the_primary_takes_writes_but_a_rooms_events_and_other_servers_invites() -> None:
    routes = primary_routes(CLIENT_ROUTE_TABLES, ADMIN_ROUTE_TABLES)
    assert "POST /_matrix/client/v3/createRoom" in routes
    assert "PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}" not in routes
    assert "GET /_matrix/client/v3/sync" not in routes
    # Its pushers and appservice transactions are told of the remote invite it keeps.
    assert "PUT /_matrix/federation/v2/invite/{room_id}/{event_id}" in routes
    # Receipts and to-device messages other processes took in: its streams.
    assert f"POST {EDUS_PATH}" in routes
