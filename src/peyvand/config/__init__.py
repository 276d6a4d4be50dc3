"""Frozen, validated configuration models (loaded by ``config.loader``)."""

from peyvand.config.model import (
    CacheConfig,
    Config,
    DatabaseConfig,
    DisappearingConfig,
    EmailConfig,
    FederationConfig,
    InterconnectConfig,
    MediaConfig,
    ModerationConfig,
    PushConfig,
    RateLimitConfig,
    RegistrationConfig,
    RetentionConfig,
    SupportContact,
    VoipConfig,
    WellKnownConfig,
)

__all__ = [
    "CacheConfig",
    "Config",
    "DatabaseConfig",
    "DisappearingConfig",
    "EmailConfig",
    "FederationConfig",
    "InterconnectConfig",
    "MediaConfig",
    "ModerationConfig",
    "PushConfig",
    "RateLimitConfig",
    "RegistrationConfig",
    "RetentionConfig",
    "SupportContact",
    "VoipConfig",
    "WellKnownConfig",
]
