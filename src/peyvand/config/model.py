"""The configuration model. Every field is documented in docs/config.md and in the file
``peyvand generate-config`` writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from peyvand.types import ServerName


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    # "sqlite:///<path>" (embedded default) or "postgresql://user:pw@host:port/db".
    url: str
    # SQLite only: the page cache of each connection (the writer and each reader), in KiB.
    sqlite_cache_kib: int = 256

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith(("postgres://", "postgresql://"))

    @property
    def sqlite_path(self) -> str:
        return self.url.removeprefix("sqlite:///").removeprefix("sqlite://")


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """Time limits for reading requests (``api.connections``), and the proxies trusted to
    name the client."""

    # Seconds a client has to send a request's head (request line and headers), counted
    # from the connection's opening or from the first byte of a later request on it.
    request_header_timeout: float = 20.0
    # Seconds a request body may go without a byte arriving; also the grace period of the
    # minimum rate below.
    request_body_timeout: float = 60.0
    # Bytes per second a body must average once that grace period is over: N bytes may
    # take request_body_timeout + N / request_body_min_rate seconds. 0: no minimum rate.
    request_body_min_rate: int = 1024
    # Seconds a kept-alive connection may stay idle between requests (nginx's default).
    keepalive_timeout: float = 75.0
    # Reverse proxies (CIDRs) whose X-Forwarded-For names the client (``api.client_address``);
    # empty: the socket's peer is the client.
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RegistrationConfig:
    # Anyone may register with m.login.dummy (off by default).
    open: bool = False
    # Tokens accepted by m.login.registration_token (registration needs one when not open).
    tokens: tuple[str, ...] = ()
    # Guest accounts (POST /register?kind=guest), off by default as in Synapse.
    allow_guest_access: bool = False
    # bcrypt cost of new password hashes (log2 of its rounds), 12 as Synapse; 4-31.
    bcrypt_rounds: int = 12


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    enabled: bool = True
    # Sustained requests per second and burst size, per user (or per IP when unauthenticated).
    per_second: float = 10.0
    burst: int = 50
    # Login and registration attempts, per IP.
    login_per_second: float = 0.5
    login_burst: int = 10
    # Call signalling (``m.call.*`` events), per user, apart from the limit above.
    calls_per_second: float = 5.0
    calls_burst: int = 50


@dataclass(frozen=True, slots=True)
class CacheConfig:
    # Events kept in memory by ID (immutable, so never stale); the largest cache.
    events: int = 10_000


@dataclass(frozen=True, slots=True)
class MediaConfig:
    # Largest upload, in bytes (100 MiB).
    max_upload_size: int = 100 * 1024 * 1024
    # Total bytes each user may have uploaded; unset: no quota.
    user_quota: int | None = None
    # Media IDs a user may have created (POST /media/v1/create) and not yet uploaded to.
    max_pending_uploads: int = 10
    # Seconds a created media ID stays usable for its upload.
    pending_upload_lifetime: int = 24 * 3600
    # Images with more pixels than this are not thumbnailed (decompression-bomb guard).
    max_thumbnail_pixels: int = 32_000_000
    # Media uploaded before this UTC date-time stays downloadable without authentication on
    # the deprecated /_matrix/media/v3 endpoints; unset: none is (the spec's "freeze").
    unauthenticated_media_before: str | None = None
    # URL previews (GET /media/preview_url): off by default.
    url_preview_enabled: bool = False
    # Networks a preview may fetch from although private or loopback (CIDR strings).
    url_preview_allowed_networks: tuple[str, ...] = ()
    # Largest page or image fetched for a preview, in bytes, and the time allowed, in seconds.
    url_preview_max_size: int = 10 * 1024 * 1024
    url_preview_timeout: float = 10.0

    @property
    def unauthenticated_media_before_ts(self) -> int | None:
        """The freeze date in milliseconds since the epoch (ValueError if malformed)."""
        if self.unauthenticated_media_before is None:
            return None
        moment = datetime.fromisoformat(self.unauthenticated_media_before)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class FederationConfig:
    # Talk to other homeservers (Server-Server API). Off: the federation endpoints answer
    # 404 and nothing is sent out.
    enabled: bool = False
    # TLS port of the federation listener (peers reach the server here); unset: none.
    port: int | None = None
    # PEM certificate chain and private key of the federation listener.
    tls_certificate_path: Path | None = None
    tls_private_key_path: Path | None = None
    # Test networks only: accept peers' self-signed certificates and loopback or private
    # peer addresses.
    test_network: bool = False
    # Notary servers asked for keys a server cannot give itself (server names).
    trusted_key_servers: tuple[ServerName, ...] = ()
    # Federate only with these servers (names; '*' wildcards), when not empty.
    allowed_servers: tuple[str, ...] = ()
    # Never federate with these servers (names; '*' wildcards).
    denied_servers: tuple[str, ...] = ()
    # How long other servers may cache this server's signing key, in seconds.
    key_validity_period: int = 7 * 24 * 3600


# Invite policies (docs/compliance.md, "Interconnect opt-in").
INVITE_POLICIES = ("open", "local-only", "hold-remote")


@dataclass(frozen=True, slots=True)
class InterconnectConfig:
    # Which invites from other servers reach a user who has not chosen: "open" (all),
    # "local-only" (refused with M_INVITE_BLOCKED) or "hold-remote" (kept as message requests).
    default_invite_policy: str = "open"
    # Message requests (held invites) kept per user; more are refused with M_INVITE_BLOCKED.
    max_pending_requests_per_user: int = 100
    # Invites accepted from any one other server, and from any one user of another server,
    # per minute (token buckets, bursting to the same number); more get 429 M_LIMIT_EXCEEDED.
    remote_invites_per_server_per_minute: int = 60
    remote_invites_per_user_per_minute: int = 10


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    # Run the background purge of expired history (docs/compliance.md, "Retention").
    enabled: bool = True
    # Milliseconds history is kept in rooms without an m.room.retention max_lifetime;
    # unset: forever.
    default_max_lifetime: int | None = None
    # The range a room's max_lifetime is clamped to, in milliseconds; unset: no bound.
    allowed_lifetime_min: int | None = None
    allowed_lifetime_max: int | None = None
    # Seconds between purge runs.
    purge_interval: int = 3600
    # Events purged per transaction (the server answers requests between batches).
    purge_batch_size: int = 500
    # Milliseconds after which a redacted event's original content is deleted from the
    # database (clients only ever see the redacted form); unset: kept.
    redacted_content_lifetime: int | None = 7 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class DisappearingConfig:
    # Honour the rooms' disappearing-message timers (docs/compliance.md).
    enabled: bool = True
    # The shortest and longest timer a room admin may set, in milliseconds.
    min_timer: int = 30 * 1000
    max_timer: int = 28 * 24 * 3600 * 1000
    # Seconds between checks for expired messages (each is removed within this of expiry).
    check_interval: int = 10


@dataclass(frozen=True, slots=True)
class PresenceConfig:
    # Track presence (docs/config.md); off: nothing in /sync, no EDUs, everyone offline.
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class SlidingSyncConfig:
    # Timeline events one sliding-sync response carries at most over all its rooms, plus
    # one per room past it (never less than the most one room reads); rooms past it get
    # the rest in later responses.
    max_timeline_events: int = 10_000


@dataclass(frozen=True, slots=True)
class PushConfig:
    # Networks a push gateway may be reached at although private or loopback (CIDR strings).
    gateway_allowed_networks: tuple[str, ...] = ()
    # Notifications sent to push gateways at the same time, all pushers together.
    max_concurrent_sends: int = 64
    # Seconds allowed for one POST to a push gateway.
    gateway_timeout: float = 10.0
    # Send the event's content to the gateway (unless the pusher asks for event_id_only).
    include_content: bool = True
    # Pushers (http and email) one user may have; /pushers/set refuses more (400).
    max_pushers_per_user: int = 20


@dataclass(frozen=True, slots=True)
class EmailConfig:
    # SMTP server for notification emails (email pushers); unset: no email is sent and
    # email pushers are refused.
    smtp_host: str | None = None
    smtp_port: int = 25
    # "none", "starttls" (upgrade a plain connection) or "tls" (TLS from the start).
    smtp_tls: str = "none"
    smtp_username: str | None = None
    smtp_password: str | None = None
    # Seconds allowed for one SMTP session.
    smtp_timeout: float = 30.0
    # The From header of notification emails.
    notif_from: str = "Matrix <noreply@localhost>"
    # The name of the service in the emails' subject and text.
    app_name: str = "Matrix"
    # Seconds a notification waits before its digest is sent (Synapse: 10 minutes), so
    # what is read meanwhile is not mailed.
    notif_delay: float = 600.0


@dataclass(frozen=True, slots=True)
class ModerationConfig:
    # Rooms holding m.policy.rule.* events (room IDs or aliases) this server enforces.
    policy_rooms: tuple[str, ...] = ()
    # Localpart of the server's user that joins the policy rooms to follow them.
    policy_user: str = "moderation"


@dataclass(frozen=True, slots=True)
class SupportContact:
    # Client-Server API "Support information" (support.yaml): at least one of matrix_id
    # and email_address; role "m.role.admin", "m.role.security" or namespaced.
    role: str
    matrix_id: str | None = None
    email_address: str | None = None


@dataclass(frozen=True, slots=True)
class WellKnownConfig:
    # The m.server of /.well-known/matrix/server ("matrix.example.com:443"): where other
    # servers find this one's federation API; unset: 404 M_NOT_FOUND, as Synapse.
    server: str | None = None
    # /.well-known/matrix/support; with neither set it answers 404.
    support_page: str | None = None
    support_contacts: tuple[SupportContact, ...] = ()


@dataclass(frozen=True, slots=True)
class VoipConfig:
    # TURN server URIs given to clients by GET /voip/turnServer; empty: no TURN.
    turn_uris: tuple[str, ...] = ()
    # Secret shared with the TURN server (coturn's static-auth-secret): time-limited
    # credentials. Else static turn_username and turn_password.
    turn_shared_secret: str | None = None
    turn_username: str | None = None
    turn_password: str | None = None
    # Seconds the credentials are valid for.
    turn_user_lifetime: int = 3600
    # Whether guests may get TURN credentials (Synapse's turn_allow_guests).
    turn_allow_guests: bool = True


@dataclass(frozen=True, slots=True)
class ServerNoticesConfig:
    # Localpart of the user that sends server notices (Synapse's system_mxid_localpart);
    # unset: server notices are off.
    system_mxid_localpart: str | None = None
    # The system user's display name and avatar in the notices rooms.
    system_mxid_display_name: str | None = None
    system_mxid_avatar_url: str | None = None
    # Name, topic and avatar of each user's server notices room.
    room_name: str = "Server Notices"
    room_topic: str | None = None
    room_avatar_url: str | None = None
    # Join the user to the room at once instead of inviting them.
    auto_join: bool = False

    @property
    def enabled(self) -> bool:
        return self.system_mxid_localpart is not None


# What a process of a multi-process deployment does (docs/scaling.md).
WORKER_ROLES = (
    "client_reader",
    "event_writer",
    "federation_inbound",
    "federation_sender",
    "media",
    "background",
)


@dataclass(frozen=True, slots=True)
class WorkerInstance:
    """One process of a deployment: its name, its roles and where it listens."""

    name: str
    roles: tuple[str, ...]
    port: int
    bind: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """Where the other processes reach it (forwarded requests)."""
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class WorkersConfig:
    # The processes of a deployment sharing one PostgreSQL database; empty (the default):
    # this one process does everything.
    instances: tuple[WorkerInstance, ...] = ()
    # File holding the secret with which the processes authenticate requests to each other.
    secret_path: Path | None = None
    # Which of the instances this process is (``peyvand serve --worker NAME`` sets it).
    instance: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.instances)

    @property
    def this(self) -> WorkerInstance | None:
        """This process's instance, when it is one of a deployment's."""
        return next((i for i in self.instances if i.name == self.instance), None)

    def has_role(self, role: str) -> bool:
        """Whether this process does ``role``: always, when it is the only process."""
        this = self.this
        return not self.instances or (this is not None and role in this.roles)

    def with_role(self, role: str) -> tuple[WorkerInstance, ...]:
        """The instances doing ``role``, in configured order."""
        return tuple(i for i in self.instances if role in i.roles)

    @property
    def writer_lane(self) -> tuple[int, int]:
        """This process's place among the event writers and their number: the residue
        of the stream positions and state group IDs it allocates (``Lane``); (0, 1) for
        a single process, and for a process that writes no events."""
        writers = [i.name for i in self.with_role("event_writer")]
        if self.instance not in writers:
            return (0, 1)
        return (writers.index(self.instance), len(writers))


@dataclass(frozen=True, slots=True)
class Config:
    server_name: ServerName
    data_dir: Path
    signing_key_path: Path
    database: DatabaseConfig
    bind: str = "127.0.0.1"
    port: int = 8008
    public_baseurl: str | None = None
    http: HttpConfig = field(default_factory=HttpConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    rate_limits: RateLimitConfig = field(default_factory=RateLimitConfig)
    caches: CacheConfig = field(default_factory=CacheConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    interconnect: InterconnectConfig = field(default_factory=InterconnectConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    disappearing: DisappearingConfig = field(default_factory=DisappearingConfig)
    moderation: ModerationConfig = field(default_factory=ModerationConfig)
    presence: PresenceConfig = field(default_factory=PresenceConfig)
    sliding_sync: SlidingSyncConfig = field(default_factory=SlidingSyncConfig)
    push: PushConfig = field(default_factory=PushConfig)
    email: EmailConfig = field(default_factory=EmailConfig)
    well_known: WellKnownConfig = field(default_factory=WellKnownConfig)
    voip: VoipConfig = field(default_factory=VoipConfig)
    server_notices: ServerNoticesConfig = field(default_factory=ServerNoticesConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    # Largest request body accepted, in bytes.
    max_request_size: int = 50 * 1024 * 1024
    log_level: str = "INFO"
    # Contact URI given with M_RESOURCE_LIMIT_EXCEEDED errors ("mailto:admin@example.com").
    admin_contact: str | None = None
    # Application service registration files (YAML), read at start and on SIGHUP.
    app_service_config_files: tuple[Path, ...] = ()

    @property
    def base_url(self) -> str:
        if self.public_baseurl:
            return self.public_baseurl.rstrip("/") + "/"
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}/"

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"
