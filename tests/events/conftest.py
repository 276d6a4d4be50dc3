"""Shared fixtures for the event-crypto tests."""

from __future__ import annotations

import pytest

from peyvand.events.signing import SigningKey, generate_signing_key


@pytest.fixture
def signing_key() -> SigningKey:
    """A fresh ed25519 key, version ``test``."""
    return generate_signing_key("test")
