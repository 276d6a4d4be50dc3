"""Load the TOML config file into the frozen ``Config``, and render a documented one.

Loading is strict: an unknown key, a missing required key or a value of the wrong type is
a ``ConfigError`` naming the key (``rate_limits.burst``). Relative paths, including the
path in a ``sqlite:///`` database URL, are resolved against the config file's directory,
so a data directory can be moved together with its config.

The file layout mirrors the dataclasses in ``config.model``: top-level fields are
top-level keys, nested dataclasses are tables (``[database]``, ``[registration]``,
``[rate_limits]``). ``OPTION_DOCS`` documents every option; ``render_config`` writes each
one with its documentation, so the generated file is the reference an operator reads.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

from peyvand.config.model import (
    INVITE_POLICIES,
    WORKER_ROLES,
    Config,
    DatabaseConfig,
    DisappearingConfig,
    EmailConfig,
    FederationConfig,
    HttpConfig,
    InterconnectConfig,
    MediaConfig,
    ModerationConfig,
    PushConfig,
    RetentionConfig,
    ServerNoticesConfig,
    SupportContact,
    VoipConfig,
    WellKnownConfig,
    WorkersConfig,
)

__all__ = [
    "OPTION_DOCS",
    "ConfigError",
    "as_worker",
    "load_config",
    "parse_config",
    "render_config",
]

_T = TypeVar("_T")

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Appendices, "Server Name": hostname (DNS name, IPv4 or [IPv6] literal) [":" port].
_SERVER_NAME: Final = re.compile(r"(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,255})(:[0-9]{1,5})?")

# The documentation of every option, keyed by its dotted name. Also the order in which
# ``render_config`` writes top-level keys and tables (fields missing here are an error).
OPTION_DOCS: Final[Mapping[str, str]] = {
    "server_name": (
        "The server name: the part after ':' in every user ID (@alice:example.com) and room\n"
        "alias on this server. It cannot be changed once users have registered."
    ),
    "data_dir": (
        "Directory for the server's data (SQLite database, signing key, media).\n"
        "A relative path is relative to the directory of this file."
    ),
    "signing_key_path": (
        "The server's Ed25519 signing key, in Synapse's format ('ed25519 <version> <seed>').\n"
        "Keep it secret and back it up: other servers pin it. Relative to this file."
    ),
    "bind": "Address the HTTP listener binds to ('127.0.0.1', '0.0.0.0', '::').",
    "port": "TCP port of the HTTP listener (1-65535).",
    "public_baseurl": (
        "The URL clients use to reach this server, when it differs from http://bind:port/\n"
        "(for example behind a TLS-terminating reverse proxy). Unset by default."
    ),
    "max_request_size": "Largest request body accepted, in bytes.",
    "log_level": "Logging level: one of DEBUG, INFO, WARNING, ERROR, CRITICAL.",
    "admin_contact": (
        "How users reach the operator (a URI such as 'mailto:admin@example.com'), sent with\n"
        "M_RESOURCE_LIMIT_EXCEEDED errors such as a full media quota. Unset by default."
    ),
    "app_service_config_files": (
        "Registration files (YAML) of the application services (bridges and bots) to attach,\n"
        "as each bridge generates them. Relative to this file. Read at start and again on\n"
        "SIGHUP; a file that does not check out stops the start (or keeps the old set)."
    ),
    "database": "The database.",
    "database.url": (
        "'sqlite:///<path>' for the embedded SQLite database (a relative path is relative\n"
        "to this file; 'sqlite:////abs/path' for an absolute one), or\n"
        "'postgresql://user:password@host:port/dbname' for PostgreSQL."
    ),
    "database.sqlite_cache_kib": (
        "SQLite only: the page cache of each database connection (one writer, two\n"
        "readers), in KiB, held in the server's memory. Pages beyond it are read again\n"
        "from the operating system's file cache. At least 64."
    ),
    "http": (
        "Time limits for reading requests, so that a slow or stalled client (a slowloris)\n"
        "cannot hold connections open. Answering is not limited (a /sync may long-poll).\n"
        "And the reverse proxies trusted to name the client."
    ),
    "http.request_header_timeout": (
        "Seconds a client has to send a request's line and headers, from the connection's\n"
        "opening or the first byte of a later request on it; then it is closed."
    ),
    "http.request_body_timeout": (
        "Seconds a request body may go without a byte arriving, and the grace period of\n"
        "the minimum rate below; a slower body's connection is closed."
    ),
    "http.keepalive_timeout": (
        "Seconds a kept-alive connection may stay idle between requests before it is closed."
    ),
    "http.request_body_min_rate": (
        "Bytes per second a request body must average after that grace period: a body of\n"
        "N bytes may take request_body_timeout + N / request_body_min_rate seconds\n"
        "(uploads at any usable speed pass). 0: no minimum rate."
    ),
    "http.trusted_proxies": (
        "Reverse proxies (CIDRs, e.g. ['127.0.0.1/32'] for nginx on this machine) whose\n"
        "X-Forwarded-For header names the client: a request from one is taken to come from\n"
        "the right-most address in it that is not a trusted proxy. Per-IP rate limits and\n"
        "appservices' ip_range_whitelist use that address. Empty: the connection's peer is\n"
        "the client and the header is ignored. Never list addresses clients connect from."
    ),
    "registration": "Who may create accounts through the Client-Server API.",
    "registration.open": (
        "Anyone may register with m.login.dummy, without a token. Off by default: only\n"
        "turn it on for development or a private network."
    ),
    "registration.tokens": (
        "Registration tokens accepted by m.login.registration_token; when registration\n"
        "is not open, a new account needs one of them. Empty: no one may self-register\n"
        "(operators can still use 'peyvand register-user')."
    ),
    "registration.allow_guest_access": (
        "Anyone may create a guest account (POST /register?kind=guest) without a\n"
        "token: it can read world-readable rooms, join rooms whose guest_access is\n"
        "can_join and later be upgraded with a password. Off by default."
    ),
    "registration.bcrypt_rounds": (
        "bcrypt cost of new password hashes (each step doubles the work), 4 to 31.\n"
        "12, as Synapse. Existing hashes keep the cost they were made with."
    ),
    "caches": "In-memory caches: bigger is faster and uses more memory.",
    "caches.events": ("Events kept in memory by ID, most recently used first (about 2 KiB each)."),
    "media": "The media repository: uploads, downloads, thumbnails and URL previews.",
    "media.max_upload_size": "Largest upload, in bytes; larger ones get 413 M_TOO_LARGE.",
    "media.user_quota": (
        "Total bytes of media each local user may have uploaded; an upload over it gets\n"
        "403 M_RESOURCE_LIMIT_EXCEEDED. Unset by default: no quota."
    ),
    "media.max_pending_uploads": (
        "Media IDs a user may hold from POST /_matrix/media/v1/create without having\n"
        "uploaded to them yet; one more gets 429 M_LIMIT_EXCEEDED."
    ),
    "media.pending_upload_lifetime": (
        "Seconds a media ID from POST /_matrix/media/v1/create stays open for its upload\n"
        "(the response's unused_expires_at)."
    ),
    "media.max_thumbnail_pixels": (
        "Images with more pixels (width x height) than this are not thumbnailed\n"
        "(413 M_TOO_LARGE): a guard against decompression bombs."
    ),
    "media.unauthenticated_media_before": (
        "The spec's freeze of the deprecated unauthenticated media endpoints\n"
        "(/_matrix/media/v3/download and /thumbnail): media uploaded before this UTC\n"
        "date-time ('2024-09-01T00:00:00Z') stays downloadable there; newer media only\n"
        "through the authenticated /_matrix/client/v1/media endpoints. Unset by default:\n"
        "no media is served without authentication (as Synapse's enable_authenticated_media)."
    ),
    "media.url_preview_enabled": (
        "Serve URL previews (GET /_matrix/client/v1/media/preview_url). Off by default: the\n"
        "server then fetches pages that users name."
    ),
    "media.url_preview_allowed_networks": (
        "Networks (CIDR, e.g. '10.1.0.0/16') a preview may fetch from although private,\n"
        "loopback or otherwise non-public; every other such address is refused."
    ),
    "media.url_preview_max_size": "Largest page or image fetched for a preview, in bytes.",
    "media.url_preview_timeout": "Seconds allowed for fetching one preview, redirects included.",
    "federation": "Federation with other homeservers (Server-Server API).",
    "federation.enabled": (
        "Talk to other homeservers. Off by default: the federation endpoints answer 404\n"
        "and nothing is sent to other servers."
    ),
    "federation.port": (
        "TLS port of the federation listener, where other servers reach this one. Unless\n"
        "it is 8448 (or .well-known/SRV delegation points here), put it in server_name\n"
        "('example.com:8449'). Unset: no federation listener."
    ),
    "federation.tls_certificate_path": (
        "PEM certificate chain for the federation listener (peers require a certificate\n"
        "valid for the server name, unless on a test network). Relative to this file."
    ),
    "federation.tls_private_key_path": "Its PEM private key (relative to this file).",
    "federation.test_network": (
        "FOR TEST NETWORKS ONLY: accept peers' self-signed certificates and peers on\n"
        "loopback or private addresses. Never turn on for a server on the Internet."
    ),
    "federation.trusted_key_servers": (
        "Notary servers asked (POST /_matrix/key/v2/query) for a server's keys when the\n"
        "server cannot be asked itself. Empty by default."
    ),
    "federation.allowed_servers": (
        "Federate only with these servers (names, '*' matches any characters). Empty: all\n"
        "servers not denied."
    ),
    "federation.denied_servers": (
        "Never federate with these servers (names, '*' wildcards): their requests get 403\n"
        "and nothing is sent to them."
    ),
    "federation.key_validity_period": (
        "Seconds other servers may cache this server's signing key (valid_until_ts)."
    ),
    "interconnect": (
        "Invites from users of other servers. Each user may choose how theirs are\n"
        "handled (interconnection is opt-in for users); these are the defaults."
    ),
    "interconnect.default_invite_policy": (
        "What happens to invites from other servers for a user who has not chosen:\n"
        "'open' (shown as usual), 'local-only' (refused with 403 M_INVITE_BLOCKED) or\n"
        "'hold-remote' (kept as message requests, out of /sync until the user accepts)."
    ),
    "interconnect.max_pending_requests_per_user": (
        "Message requests (held invites) kept per user; further invites from other\n"
        "servers are refused with 403 M_INVITE_BLOCKED until the user answers some."
    ),
    "interconnect.remote_invites_per_server_per_minute": (
        "Invites accepted from any one other server per minute (bursting to as many);\n"
        "more are refused with 429 M_LIMIT_EXCEEDED and nothing is stored."
    ),
    "interconnect.remote_invites_per_user_per_minute": (
        "Invites accepted from any one user of another server per minute; more are\n"
        "refused with 429 M_LIMIT_EXCEEDED."
    ),
    "retention": (
        "Retention: history older than a room's max_lifetime (its m.room.retention state\n"
        "event, or the default below) is purged by a background job. Legal holds win."
    ),
    "retention.enabled": "Run the background purge of expired history.",
    "retention.default_max_lifetime": (
        "Milliseconds history is kept in rooms whose m.room.retention sets no\n"
        "max_lifetime; unset: forever."
    ),
    "retention.allowed_lifetime_min": (
        "Smallest max_lifetime a room may set, in milliseconds (smaller ones are raised\n"
        "to it); unset: no bound."
    ),
    "retention.allowed_lifetime_max": (
        "Largest max_lifetime a room may set, in milliseconds (larger ones are lowered\n"
        "to it); unset: no bound."
    ),
    "retention.purge_interval": "Seconds between purge runs.",
    "retention.purge_batch_size": (
        "Events purged per database transaction; the server keeps answering between\nbatches."
    ),
    "retention.redacted_content_lifetime": (
        "Milliseconds after which the original content of a redacted event is deleted\n"
        "from the database (clients only see the redacted form); unset: kept."
    ),
    "disappearing": (
        "Disappearing messages: a per-room timer (state event io.peyvand.disappearing, see\n"
        "docs/compliance.md) after which each message is removed."
    ),
    "disappearing.enabled": "Honour the rooms' disappearing-message timers.",
    "disappearing.min_timer": "Shortest timer a room admin may set, in milliseconds.",
    "disappearing.max_timer": "Longest timer a room admin may set, in milliseconds.",
    "disappearing.check_interval": (
        "Seconds between checks for expired messages; each is removed within this\n"
        "many seconds of its expiry."
    ),
    "moderation": (
        "Moderation policy lists: rooms of m.policy.rule.* events whose bans this server\n"
        "enforces on invites, joins and inbound federation."
    ),
    "moderation.policy_rooms": (
        "Policy rooms to follow (room IDs or aliases); the policy user joins them."
    ),
    "moderation.policy_user": (
        "Localpart of the server's user that joins the policy rooms (created if missing)."
    ),
    "presence": (
        "Presence (online / unavailable / offline, status messages) in /sync and over\n"
        "federation, for users sharing a room."
    ),
    "presence.enabled": (
        "Track presence. Off: PUT /presence is accepted and ignored, GET answers offline,\n"
        "/sync carries no presence and no m.presence EDUs are sent or applied."
    ),
    "sliding_sync": "Simplified sliding sync (MSC4186), the sync of Element X.",
    "sliding_sync.max_timeline_events": (
        "Timeline events one response carries at most over all its rooms, plus one per\n"
        "room past it (never less than the most one room reads): rooms past it\n"
        "get shorter pages, and the rest in later responses."
    ),
    "push": "Delivery of push notifications to push gateways (Push Gateway API).",
    "push.gateway_allowed_networks": (
        "Networks (CIDR, e.g. '10.1.0.0/16') a pusher's gateway URL may reach although\n"
        "private, loopback or otherwise non-public; every other such address is refused."
    ),
    "push.max_concurrent_sends": "Notifications sent to push gateways at once, all pushers.",
    "push.gateway_timeout": "Seconds allowed for one request to a push gateway.",
    "push.max_pushers_per_user": "Pushers one user may have; POST /pushers/set refuses more.",
    "push.include_content": (
        "Send the event's content to push gateways (pushers with data.format\n"
        "'event_id_only' never get it)."
    ),
    "email": (
        "Email notifications (email pushers): a digest of unread messages after a delay,\n"
        "sent over SMTP, with an unsubscribe link based on public_baseurl."
    ),
    "email.smtp_host": "SMTP server; unset: no email is sent and email pushers are refused.",
    "email.smtp_port": "SMTP server port.",
    "email.smtp_tls": (
        "'none', 'starttls' (upgrade a plain connection) or 'tls' (TLS from the start);\n"
        "the server's certificate is verified."
    ),
    "email.smtp_username": "User name to log in to the SMTP server with (unset: no login).",
    "email.smtp_password": "Password to log in to the SMTP server with.",
    "email.smtp_timeout": "Seconds allowed for one SMTP session.",
    "email.notif_from": "The From header of notification emails.",
    "email.app_name": "The service's name in notification emails.",
    "email.notif_delay": (
        "Seconds a notification waits before it is mailed in a digest (Synapse: 600);\n"
        "what the user reads meanwhile is not mailed."
    ),
    "well_known": (
        "Discovery files served under /.well-known/matrix/ (client is always served,\n"
        "from public_baseurl)."
    ),
    "well_known.server": (
        'The m.server of /.well-known/matrix/server ("matrix.example.com:443"): where\n'
        "other servers reach this one when server_name's host delegates to it; unset: 404."
    ),
    "well_known.support_page": "A help page URL for /.well-known/matrix/support.",
    "well_known.support_contacts": (
        "Administrator contacts for /.well-known/matrix/support: inline tables with role\n"
        '("m.role.admin", "m.role.security") and matrix_id and/or email_address.\n'
        "With neither contacts nor support_page, /.well-known/matrix/support answers 404."
    ),
    "voip": "TURN credentials for voice and video calls (GET /voip/turnServer).",
    "voip.turn_uris": (
        'TURN URIs given to clients ("turn:turn.example.com:3478?transport=udp");\n'
        "empty: no TURN server, the endpoint answers {}."
    ),
    "voip.turn_shared_secret": (
        "Secret shared with the TURN server (coturn: use-auth-secret, static-auth-secret):\n"
        "each user gets credentials valid for turn_user_lifetime."
    ),
    "voip.turn_username": "Static TURN user name, used when no shared secret is set.",
    "voip.turn_password": "Static TURN password, used with turn_username.",
    "voip.turn_user_lifetime": "Seconds TURN credentials are valid for.",
    "voip.turn_allow_guests": "Whether guest accounts may get TURN credentials.",
    "server_notices": (
        "Server notices: messages from the operator, each user's in a room of their own\n"
        "(tagged m.server_notice), sent with the admin API or 'peyvand server-notice'."
    ),
    "server_notices.system_mxid_localpart": (
        "Localpart of the user that sends the notices (created on first use); unset: off."
    ),
    "server_notices.system_mxid_display_name": "Display name of the notices' sender.",
    "server_notices.system_mxid_avatar_url": "Avatar (mxc:// URI) of the notices' sender.",
    "server_notices.room_name": "Name of each user's server notices room.",
    "server_notices.room_topic": "Topic of each user's server notices room.",
    "server_notices.room_avatar_url": "Avatar (mxc:// URI) of each server notices room.",
    "server_notices.auto_join": "Join users to their notices room instead of inviting them.",
    "workers": (
        "Several processes on one PostgreSQL database (docs/scaling.md). Every process of\n"
        "a deployment reads the same file and is started as 'peyvand serve --worker NAME'.\n"
        "Without instances (the default) this one process does everything."
    ),
    "workers.instances": (
        "The processes, each an inline table: name (letters, digits, '-', '_'), roles (any\n"
        "of client_reader, event_writer, federation_inbound, federation_sender, media,\n"
        "background; each role needs at least one process; several event_writers share\n"
        "the rooms; several federation_senders share the destinations), port and bind\n"
        "(default 127.0.0.1): where nginx and the other processes reach it. Change the\n"
        "writers or the senders with all of them stopped. PostgreSQL only."
    ),
    "workers.secret_path": (
        "File holding the secret the processes authenticate their requests to each other\n"
        "with (at least 32 characters; keep it private). Required with instances."
    ),
    "workers.instance": (
        "Which instance this process is; usually given as 'peyvand serve --worker NAME'."
    ),
    "rate_limits": "Per-client request rate limits (token buckets).",
    "rate_limits.enabled": "Enforce the limits below. Turn off only for tests and benchmarks.",
    "rate_limits.per_second": (
        "Sustained requests per second, per user (per IP address when unauthenticated)."
    ),
    "rate_limits.burst": "Requests allowed in a burst above the sustained rate.",
    "rate_limits.login_per_second": "Sustained login and registration attempts per second, per IP.",
    "rate_limits.login_burst": "Login and registration attempts allowed in a burst, per IP.",
    "rate_limits.calls_per_second": (
        "Sustained call events (m.call.*) per second, per user, counted apart from the limit above."
    ),
    "rate_limits.calls_burst": "Call events allowed in a burst, per user.",
}

# Example values rendered (commented out) for optional options that are unset.
_EXAMPLES: Final[Mapping[str, str]] = {
    "public_baseurl": '"https://matrix.example.com/"',
    "admin_contact": '"mailto:admin@example.com"',
    "email.smtp_host": '"smtp.example.com"',
    "email.smtp_username": '"matrix"',
    "email.smtp_password": '"secret"',
    "media.user_quota": "1073741824",
    "well_known.server": '"matrix.example.com:443"',
    "well_known.support_page": '"https://example.com/support.html"',
    "voip.turn_shared_secret": '"secret"',
    "voip.turn_username": '"turnuser"',
    "voip.turn_password": '"turnpassword"',
    "server_notices.system_mxid_localpart": '"notices"',
    "server_notices.system_mxid_display_name": '"Server Notices"',
    "server_notices.system_mxid_avatar_url": '"mxc://example.com/notices"',
    "server_notices.room_topic": '"Messages from the operator"',
    "server_notices.room_avatar_url": '"mxc://example.com/notices-room"',
    "media.unauthenticated_media_before": '"2024-09-01T00:00:00Z"',
    "workers.secret_path": '"workers.secret"',
    "workers.instance": '"writer1"',
    "federation.port": "8448",
    "federation.tls_certificate_path": '"tls.crt"',
    "federation.tls_private_key_path": '"tls.key"',
}


class ConfigError(Exception):
    """The config file is missing, not TOML, or does not describe a valid ``Config``."""


def load_config(path: Path | str) -> Config:
    """Read and validate the TOML config file at ``path``."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    try:
        return parse_config(raw, base_dir=path.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_config(raw: Mapping[str, Any], *, base_dir: Path) -> Config:
    """Validate already-parsed TOML; relative paths are resolved against ``base_dir``."""
    config = _build(Config, raw, prefix="", base_dir=base_dir)
    _check(config)
    database = _resolve_database(config.database, base_dir)
    return dataclasses.replace(config, database=database)


def as_worker(config: Config, name: str | None) -> Config:
    """``config`` for the process ``name`` of its deployment (``--worker``): that
    instance's ``bind`` and ``port``. ``name`` may be None only when the file names the
    instance itself or there is no deployment."""
    workers = config.workers
    name = name if name is not None else workers.instance
    if not workers.instances:
        if name is not None:
            raise ConfigError(f"--worker {name}: the config file has no 'workers.instances'")
        return config
    if name is None:
        names = ", ".join(i.name for i in workers.instances)
        raise ConfigError(
            f"this config describes several processes: name one with --worker ({names})"
        )
    chosen = dataclasses.replace(workers, instance=name)
    this = chosen.this
    if this is None:
        raise ConfigError(f"--worker: no instance is named {name!r}")
    return dataclasses.replace(config, workers=chosen, bind=this.bind, port=this.port)


def _build(cls: type[_T], raw: Any, *, prefix: str, base_dir: Path) -> _T:
    """Build dataclass ``cls`` from the table ``raw``, strictly."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"'{prefix.rstrip('.') or '<top level>'}' must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}'")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, field in fields.items():
        key = prefix + name
        if name not in raw:
            no_default = field.default is dataclasses.MISSING
            if no_default and field.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing required key '{key}'")
            continue
        values[name] = _convert(hints[name], raw[name], key=key, base_dir=base_dir)
    return cls(**values)


def _convert(hint: Any, value: Any, *, key: str, base_dir: Path) -> Any:
    """Check ``value`` against the type ``hint`` and convert it (paths, tuples, tables)."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, prefix=key + ".", base_dir=base_dir)  # type: ignore[arg-type]
    if isinstance(hint, typing.NewType):
        return hint(_convert(hint.__supertype__, value, key=key, base_dir=base_dir))
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is types.UnionType:  # only "X | None" is used; TOML has no null
        (inner,) = (arg for arg in args if arg is not type(None))
        return _convert(inner, value, key=key, base_dir=base_dir)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"'{key}' must be a list")
        return tuple(
            _convert(args[0], item, key=f"{key}[{i}]", base_dir=base_dir)
            for i, item in enumerate(value)
        )
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"'{key}' must be a non-empty path string")
        return (base_dir / Path(value).expanduser()).resolve()
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}' must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{key}' must be an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"'{key}' must be a number")
        if not math.isfinite(value):
            raise ConfigError(f"'{key}' must be a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a string")
        return value
    raise TypeError(f"config field {key} has unsupported type {hint!r}")


def _check(config: Config) -> None:
    """Value checks beyond types."""
    if not _SERVER_NAME.fullmatch(config.server_name):
        raise ConfigError(f"'server_name' is not a valid server name: {config.server_name!r}")
    if not 1 <= config.port <= 65535:
        raise ConfigError(f"'port' must be between 1 and 65535, not {config.port}")
    if not config.bind:
        raise ConfigError("'bind' must not be empty")
    if config.public_baseurl is not None and not config.public_baseurl.startswith(
        ("http://", "https://")
    ):
        raise ConfigError("'public_baseurl' must start with http:// or https://")
    if config.max_request_size <= 0:
        raise ConfigError("'max_request_size' must be positive")
    if config.caches.events < 100:
        raise ConfigError("'caches.events' must be at least 100")
    if config.sliding_sync.max_timeline_events <= 0:
        raise ConfigError("'sliding_sync.max_timeline_events' must be positive")
    if config.log_level not in LOG_LEVELS:
        raise ConfigError(f"'log_level' must be one of {', '.join(LOG_LEVELS)}")
    url = config.database.url
    if not (url.startswith("sqlite:///") or config.database.is_postgres):
        raise ConfigError("'database.url' must start with sqlite:///, postgres:// or postgresql://")
    if url.startswith("sqlite:///") and not config.database.sqlite_path:
        raise ConfigError("'database.url' names no SQLite file")
    if config.database.sqlite_cache_kib < 64:
        raise ConfigError("'database.sqlite_cache_kib' must be at least 64")
    for name in (
        "per_second",
        "burst",
        "login_per_second",
        "login_burst",
        "calls_per_second",
        "calls_burst",
    ):
        if getattr(config.rate_limits, name) <= 0:
            raise ConfigError(f"'rate_limits.{name}' must be positive")
    if any(not token for token in config.registration.tokens):
        raise ConfigError("'registration.tokens' must not contain empty tokens")
    if not 4 <= config.registration.bcrypt_rounds <= 31:
        raise ConfigError("'registration.bcrypt_rounds' must be between 4 and 31")
    _check_http(config.http)
    _check_media(config.media)
    _check_federation(config.federation)
    _check_interconnect(config.interconnect)
    _check_retention(config.retention)
    _check_disappearing(config.disappearing)
    _check_moderation(config.moderation)
    _check_push(config.push)
    _check_email(config.email)
    _check_well_known(config.well_known)
    _check_voip(config.voip)
    _check_server_notices(config.server_notices)
    _check_workers(config.workers, config)


def _check_http(http: HttpConfig) -> None:
    for name in ("request_header_timeout", "request_body_timeout", "keepalive_timeout"):
        if not 0 < getattr(http, name) <= 3600:
            raise ConfigError(f"'http.{name}' must be above 0 and at most 3600 seconds")
    if http.request_body_min_rate < 0:
        raise ConfigError("'http.request_body_min_rate' must not be negative")
    _check_networks("http.trusted_proxies", http.trusted_proxies)


def _check_retention(retention: RetentionConfig) -> None:
    for name in ("purge_interval", "purge_batch_size"):
        if getattr(retention, name) <= 0:
            raise ConfigError(f"'retention.{name}' must be positive")
    if retention.purge_batch_size > 5000:
        raise ConfigError("'retention.purge_batch_size' must be at most 5000")
    for name in (
        "default_max_lifetime",
        "allowed_lifetime_min",
        "allowed_lifetime_max",
        "redacted_content_lifetime",
    ):
        value = getattr(retention, name)
        if value is not None and value <= 0:
            raise ConfigError(f"'retention.{name}' must be positive")
    low, high = retention.allowed_lifetime_min, retention.allowed_lifetime_max
    if low is not None and high is not None and low > high:
        raise ConfigError("'retention.allowed_lifetime_min' is above 'allowed_lifetime_max'")


def _check_disappearing(disappearing: DisappearingConfig) -> None:
    for name in ("min_timer", "max_timer", "check_interval"):
        if getattr(disappearing, name) <= 0:
            raise ConfigError(f"'disappearing.{name}' must be positive")
    if disappearing.min_timer > disappearing.max_timer:
        raise ConfigError("'disappearing.min_timer' is above 'disappearing.max_timer'")


def _check_moderation(moderation: ModerationConfig) -> None:
    for i, room in enumerate(moderation.policy_rooms):
        if not room.startswith(("!", "#")):
            raise ConfigError(f"'moderation.policy_rooms[{i}]' must be a room ID or alias")
    if not re.fullmatch(r"[a-z0-9._=/+-]+", moderation.policy_user):
        raise ConfigError("'moderation.policy_user' is not a valid localpart")


def _check_interconnect(interconnect: InterconnectConfig) -> None:
    if interconnect.default_invite_policy not in INVITE_POLICIES:
        raise ConfigError(
            "'interconnect.default_invite_policy' must be one of " + ", ".join(INVITE_POLICIES)
        )
    if interconnect.max_pending_requests_per_user <= 0:
        raise ConfigError("'interconnect.max_pending_requests_per_user' must be positive")
    for name in ("remote_invites_per_server_per_minute", "remote_invites_per_user_per_minute"):
        if getattr(interconnect, name) <= 0:
            raise ConfigError(f"'interconnect.{name}' must be positive")


def _check_federation(federation: FederationConfig) -> None:
    if federation.port is not None and not 1 <= federation.port <= 65535:
        raise ConfigError(f"'federation.port' must be between 1 and 65535, not {federation.port}")
    has_cert = federation.tls_certificate_path is not None
    if has_cert != (federation.tls_private_key_path is not None):
        raise ConfigError(
            "'federation.tls_certificate_path' and 'federation.tls_private_key_path' go together"
        )
    if federation.port is not None and not has_cert:
        raise ConfigError("'federation.port' needs a TLS certificate and key")
    if federation.key_validity_period < 3600:
        raise ConfigError("'federation.key_validity_period' must be at least 3600 seconds")
    for name in ("trusted_key_servers", "allowed_servers", "denied_servers"):
        if any(not server for server in getattr(federation, name)):
            raise ConfigError(f"'federation.{name}' must not contain empty names")


def _check_media(media: MediaConfig) -> None:
    for name in (
        "max_upload_size",
        "max_pending_uploads",
        "pending_upload_lifetime",
        "max_thumbnail_pixels",
        "url_preview_max_size",
        "url_preview_timeout",
    ):
        if getattr(media, name) <= 0:
            raise ConfigError(f"'media.{name}' must be positive")
    if media.user_quota is not None and media.user_quota < 0:
        raise ConfigError("'media.user_quota' must not be negative")
    if media.unauthenticated_media_before is not None:
        try:
            _ = media.unauthenticated_media_before_ts
        except ValueError as exc:
            raise ConfigError(f"'media.unauthenticated_media_before': {exc}") from None
    _check_networks("media.url_preview_allowed_networks", media.url_preview_allowed_networks)


def _check_push(push: PushConfig) -> None:
    for name in ("max_concurrent_sends", "gateway_timeout", "max_pushers_per_user"):
        if getattr(push, name) <= 0:
            raise ConfigError(f"'push.{name}' must be positive")
    _check_networks("push.gateway_allowed_networks", push.gateway_allowed_networks)


def _check_networks(key: str, networks: tuple[str, ...]) -> None:
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(f"'{key}' has an invalid network: {network!r}") from None


def _check_email(email: EmailConfig) -> None:
    if email.smtp_tls not in ("none", "starttls", "tls"):
        raise ConfigError("'email.smtp_tls' must be 'none', 'starttls' or 'tls'")
    if not 0 < email.smtp_port <= 65535:
        raise ConfigError("'email.smtp_port' must be a port number")
    if email.smtp_timeout <= 0:
        raise ConfigError("'email.smtp_timeout' must be positive")
    if email.notif_delay < 0:
        raise ConfigError("'email.notif_delay' must not be negative")
    if email.smtp_password is not None and email.smtp_username is None:
        raise ConfigError("'email.smtp_password' needs 'email.smtp_username'")
    if "@" not in email.notif_from:
        raise ConfigError("'email.notif_from' must hold an email address")


def _check_well_known(well_known: WellKnownConfig) -> None:
    if well_known.server is not None and not _SERVER_NAME.fullmatch(well_known.server):
        raise ConfigError("'well_known.server' must be a server name, with an optional port")
    page = well_known.support_page
    if page is not None and not page.startswith(("http://", "https://")):
        raise ConfigError("'well_known.support_page' must start with http:// or https://")
    for i, contact in enumerate(well_known.support_contacts):
        _check_support_contact(contact, f"well_known.support_contacts[{i}]")


def _check_support_contact(contact: SupportContact, key: str) -> None:
    """support.yaml: a role (namespaced if not m.role.*) and a Matrix ID or an email."""
    if contact.matrix_id is None and contact.email_address is None:
        raise ConfigError(f"'{key}' needs a matrix_id or an email_address")
    if contact.matrix_id is not None and not re.fullmatch(r"@[^:]+:.+", contact.matrix_id):
        raise ConfigError(f"'{key}.matrix_id' must be a user ID")
    if contact.email_address is not None and "@" not in contact.email_address:
        raise ConfigError(f"'{key}.email_address' must be an email address")
    if not re.fullmatch(r"[a-z0-9_.-]+\.[a-z0-9_.-]+", contact.role):
        raise ConfigError(f"'{key}.role' must be m.role.admin, m.role.security or namespaced")


def _check_voip(voip: VoipConfig) -> None:
    if voip.turn_user_lifetime <= 0:
        raise ConfigError("'voip.turn_user_lifetime' must be positive")
    if (voip.turn_username is None) != (voip.turn_password is None):
        raise ConfigError("'voip.turn_username' and 'voip.turn_password' go together")
    for i, uri in enumerate(voip.turn_uris):
        if not uri.startswith(("turn:", "turns:")):  # voip.yaml: pattern "^turns?:"
            raise ConfigError(f"'voip.turn_uris[{i}]' must be a turn: or turns: URI")


def _check_server_notices(notices: ServerNoticesConfig) -> None:
    localpart = notices.system_mxid_localpart
    if localpart is not None and not re.fullmatch(r"[a-z0-9._=/+-]+", localpart):
        raise ConfigError("'server_notices.system_mxid_localpart' is not a valid localpart")


_WORKER_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Rooms are shared by the first character of their ID's opaque part, a URL-safe base64
# character for the IDs made here (``services.timeline.room_owners``): with more writers
# than this, some would own none of those (the code points span 45-122).
_MAX_EVENT_WRITERS: Final = 16


def _check_workers(workers: WorkersConfig, config: Config) -> None:
    if not workers.instances:
        if workers.instance is not None:
            raise ConfigError(
                "'workers.instance' names a process, but 'workers.instances' is empty"
            )
        return
    if not config.database.is_postgres:
        raise ConfigError(
            "'workers.instances' needs PostgreSQL: the embedded SQLite database serves one "
            "process only (set 'database.url' to a postgresql:// URL, or remove the instances)"
        )
    if workers.secret_path is None:
        raise ConfigError("'workers.secret_path' is required with 'workers.instances'")
    if config.federation.port is not None:
        raise ConfigError(
            "'federation.port' must be unset with 'workers.instances': the reverse proxy "
            "terminates federation TLS and sends federation paths to their processes"
        )
    names: set[str] = set()
    addresses: set[tuple[str, int]] = set()
    for index, instance in enumerate(workers.instances):
        key = f"workers.instances[{index}]"
        if not _WORKER_NAME.fullmatch(instance.name):
            raise ConfigError(f"'{key}.name' must be 1-64 letters, digits, '-' or '_'")
        if instance.name in names:
            raise ConfigError(f"'{key}.name': {instance.name!r} is named twice")
        names.add(instance.name)
        if not instance.roles:
            raise ConfigError(f"'{key}.roles' must name at least one role")
        unknown = [role for role in instance.roles if role not in WORKER_ROLES]
        if unknown:
            raise ConfigError(
                f"'{key}.roles': unknown role {unknown[0]!r} (roles: {', '.join(WORKER_ROLES)})"
            )
        if not 1 <= instance.port <= 65535:
            raise ConfigError(f"'{key}.port' must be between 1 and 65535")
        if (instance.bind, instance.port) in addresses:
            raise ConfigError(f"'{key}': {instance.bind}:{instance.port} is another's address")
        addresses.add((instance.bind, instance.port))
    missing = [role for role in WORKER_ROLES if not workers.with_role(role)]
    if missing:
        raise ConfigError(f"'workers.instances': no process has the role {missing[0]!r}")
    writers = workers.with_role("event_writer")
    if len(writers) > _MAX_EVENT_WRITERS:
        raise ConfigError(
            f"'workers.instances': at most {_MAX_EVENT_WRITERS} processes with the role "
            "'event_writer' (rooms are shared by the first character of their ID)"
        )
    if workers.instance is not None and workers.instance not in names:
        raise ConfigError(f"'workers.instance': no instance is named {workers.instance!r}")


def _resolve_database(database: DatabaseConfig, base_dir: Path) -> DatabaseConfig:
    """Make a relative SQLite path absolute (``sqlite:////abs/path``)."""
    if database.is_postgres:
        return database
    path = database.sqlite_path
    if path == ":memory:":
        return database
    return dataclasses.replace(database, url="sqlite:///" + str((base_dir / path).resolve()))


def render_config(config: Config, *, config_path: Path) -> str:
    """A TOML file for ``config`` in which every option is documented.

    Paths inside the directory of ``config_path`` are written relative to it, so the
    directory can be moved as a whole; ``load_config(config_path)`` gives ``config`` back.
    """
    base_dir = config_path.resolve().parent
    lines = [
        "# Peyvand homeserver configuration (TOML).",
        "# Generated by 'peyvand generate-config'; every option is documented below.",
        "# Relative paths are relative to the directory of this file.",
        "",
    ]
    tables: list[tuple[str, Any]] = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            tables.append((field.name, value))
        else:
            lines += _render_option(field.name, value, base_dir)
    for name, table in tables:
        lines += [*_comment(OPTION_DOCS[name]), f"[{name}]", ""]
        for field in dataclasses.fields(table):
            value = getattr(table, field.name)
            if name == "database" and field.name == "url":
                value = _relative_database_url(value, base_dir)
            lines += _render_option(f"{name}.{field.name}", value, base_dir)
    return "\n".join(lines).rstrip("\n") + "\n"


def _render_option(dotted: str, value: Any, base_dir: Path) -> list[str]:
    key = dotted.rpartition(".")[2]
    doc = _comment(OPTION_DOCS[dotted])
    if value is None:
        return [*doc, f"# {key} = {_EXAMPLES.get(dotted, '')}", ""]
    return [*doc, f"{key} = {_toml_value(value, base_dir)}", ""]


def _comment(text: str) -> list[str]:
    return [f"# {line}" for line in text.splitlines()]


def _toml_value(value: Any, base_dir: Path) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        return json.dumps(_relative(value, base_dir), ensure_ascii=False)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(item, base_dir) for item in value) + "]"
    if dataclasses.is_dataclass(value):  # an inline table (well_known.support_contacts)
        items = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
        inner = ", ".join(f"{k} = {_toml_value(v, base_dir)}" for k, v in items if v is not None)
        return "{" + inner + "}"
    raise TypeError(f"cannot render {value!r} as TOML")


def _relative(path: Path, base_dir: Path) -> str:
    resolved = path.resolve()
    if resolved == base_dir:
        return "."
    if resolved.is_relative_to(base_dir):
        return resolved.relative_to(base_dir).as_posix()
    return str(resolved)


def _relative_database_url(url: str, base_dir: Path) -> str:
    database = DatabaseConfig(url=url)
    if database.is_postgres or database.sqlite_path == ":memory:":
        return url
    return "sqlite:///" + _relative(base_dir / database.sqlite_path, base_dir)
