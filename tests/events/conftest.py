"""Shared fixtures: the spec's published test signing key and a fresh key."""

from __future__ import annotations

import pytest

from peyvand.events.signing import SigningKey, generate_signing_key, parse_signing_keys

# Appendices, "Cryptographic Test Vectors" > "Signing Key".
SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
SPEC_SERVER = "domain"


@pytest.fixture
def spec_key() -> SigningKey:
    """The spec's test key, ``ed25519:1`` for server ``domain``."""
    return parse_signing_keys(f"ed25519 1 {SPEC_SEED}\n")[0]


@pytest.fixture
def signing_key() -> SigningKey:
    return generate_signing_key("test")
