"""Frozen, validated configuration models (loaded by ``config.loader``)."""

from peyvand.config.model import (
    CacheConfig,
    Config,
    DatabaseConfig,
    FederationConfig,
    InterconnectConfig,
    MediaConfig,
    RateLimitConfig,
    RegistrationConfig,
)

__all__ = [
    "CacheConfig",
    "Config",
    "DatabaseConfig",
    "FederationConfig",
    "InterconnectConfig",
    "MediaConfig",
    "RateLimitConfig",
    "RegistrationConfig",
]
