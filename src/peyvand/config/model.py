"""The configuration model. Every field is documented in docs/config.md and in the file
``peyvand generate-config`` writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    # "sqlite:///<path>" (embedded default) or "postgresql://user:pw@host:port/db".
    url: str

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith(("postgres://", "postgresql://"))

    @property
    def sqlite_path(self) -> str:
        return self.url.removeprefix("sqlite:///").removeprefix("sqlite://")


@dataclass(frozen=True, slots=True)
class RegistrationConfig:
    # Anyone may register with m.login.dummy (off by default).
    open: bool = False
    # Tokens accepted by m.login.registration_token (registration needs one when not open).
    tokens: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    enabled: bool = True
    # Sustained requests per second and burst size, per user (or per IP when unauthenticated).
    per_second: float = 10.0
    burst: int = 50
    # Login and registration attempts, per IP.
    login_per_second: float = 0.5
    login_burst: int = 10


@dataclass(frozen=True, slots=True)
class CacheConfig:
    # Events kept in memory by ID (immutable, so never stale); the largest cache.
    events: int = 10_000


@dataclass(frozen=True, slots=True)
class Config:
    server_name: str
    data_dir: Path
    signing_key_path: Path
    database: DatabaseConfig
    bind: str = "127.0.0.1"
    port: int = 8008
    public_baseurl: str | None = None
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    rate_limits: RateLimitConfig = field(default_factory=RateLimitConfig)
    caches: CacheConfig = field(default_factory=CacheConfig)
    # Largest request body accepted, in bytes.
    max_request_size: int = 50 * 1024 * 1024
    log_level: str = "INFO"

    @property
    def base_url(self) -> str:
        if self.public_baseurl:
            return self.public_baseurl.rstrip("/") + "/"
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}/"
