"""Frozen, validated configuration models (loaded by ``config.loader``)."""

from peyvand.config.model import (
    Config,
    DatabaseConfig,
    RateLimitConfig,
    RegistrationConfig,
)

__all__ = ["Config", "DatabaseConfig", "RateLimitConfig", "RegistrationConfig"]
