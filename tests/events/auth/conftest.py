"""Fixtures for the authorization-rule tests (the room helper is ``harness.auth_room``)."""

from __future__ import annotations

import pytest

from harness.auth_room import VERSIONS, AuthRoom
from peyvand.events.room_versions import RoomVersion


@pytest.fixture(params=VERSIONS, ids=lambda v: f"v{v.identifier}")
def version(request: pytest.FixtureRequest) -> RoomVersion:
    """Each supported room version in turn."""
    result: RoomVersion = request.param
    return result


@pytest.fixture
def room(version: RoomVersion) -> AuthRoom:
    """An invite-only room created by Alice (PL 100, or a creator in v12)."""
    return AuthRoom(version)


@pytest.fixture
def make_room() -> type[AuthRoom]:
    """``AuthRoom`` itself, for tests that need a room of a particular shape."""
    return AuthRoom
