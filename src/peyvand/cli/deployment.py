"""``peyvand deployment nginx``: the reverse proxy's configuration of a multi-process
deployment (issue 21, "Routing"), generated from the config's ``[workers]`` and the route
tables' roles (``api.roles``), so each path goes to the processes of its role.
``peyvand deployment run`` starts every process of the deployment on this machine
(``cli.deployment_run``; issue 21, "Operations").

One upstream per role. Requests are spread over a role's processes by a hash of the
client's access token (the header's, else the query parameter's), so one user's
requests reach one process: sliding-sync connections and interactive-auth sessions live
in a process's memory. nginx retries another process of the role when one refuses or
drops the connection before answering, never after a timeout: a long-polling /sync that
timed out would be sent again to another process, and a request may have been handled
by a process that answers late. Bodies may be as large as the larger of
``max_request_size`` and ``media.max_upload_size`` (uploads pass through nginx); the
read timeout outlasts the longest long-poll a client may ask for. With
``--federation-listen`` nginx also terminates federation TLS, with the certificate the
config names (or ``--tls-certificate``/``--tls-key``), in a second server block routing
the same way.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peyvand.cli.errors import CommandError
from peyvand.config import Config, WorkerInstance

if TYPE_CHECKING:
    from peyvand.api.roles import RoutedPath

# The role of a request no route names (404s, the admin API's own 404s included).
DEFAULT_ROLE = "event_writer"
# The roles that serve requests (the others' work is leased or sharded, not routed).
ROUTED_ROLES = ("client_reader", "event_writer", "federation_inbound", "media")
# The pseudo-role of a room's event writes with several event writers.
ROOM_WRITER = "room_writer"
# Margin of nginx's read timeout over the longest long-poll a client may ask for.
LONG_POLL_MARGIN_SECONDS = 60


def add_deployment_command(commands: Any) -> None:
    """Add ``deployment`` to the ``peyvand`` command parser's ``add_subparsers()``."""
    deployment = commands.add_parser(
        "deployment", help="a multi-process deployment's helpers (docs/scaling.md)"
    )
    actions = deployment.add_subparsers(dest="action", required=True)
    nginx = actions.add_parser(
        "nginx",
        help="print the nginx configuration routing each path to its role's processes",
        description="Print an nginx 'http' block fragment (upstreams, a map and a server) "
        "for the processes of the config's [workers] table: include it from nginx.conf's "
        "http block.",
    )
    nginx.add_argument("--config", required=True, help="the deployment's config file")
    nginx.add_argument(
        "--listen",
        default="127.0.0.1:8008",
        help="nginx's listen address for clients (and federation, when TLS is terminated "
        "in front of nginx; default 127.0.0.1:8008)",
    )
    nginx.add_argument(
        "--federation-listen",
        help="also terminate federation TLS here (ADDR:PORT: the port of the server name, "
        "or the one its delegation names); the same paths go to the same roles",
    )
    nginx.add_argument(
        "--tls-certificate",
        help="PEM certificate chain of --federation-listen "
        "(default: the config's federation.tls_certificate_path)",
    )
    nginx.add_argument(
        "--tls-key",
        help="PEM private key of --federation-listen "
        "(default: the config's federation.tls_private_key_path)",
    )
    nginx.set_defaults(handler=_print_nginx)
    run = actions.add_parser(
        "run",
        help="start every process of the config's [workers] here, for development",
        description="Start each instance of the config's [workers] as 'peyvand serve "
        "--worker NAME', their output prefixed with their names; SIGINT, SIGTERM or SIGHUP stops "
        "them all. A process that exits is reported and not restarted.",
    )
    run.add_argument("--config", required=True, help="the deployment's config file")
    run.set_defaults(handler=_run)


def _print_nginx(args: argparse.Namespace) -> None:
    from peyvand.config.loader import load_config

    config = load_config(args.config)
    federation = None
    if args.federation_listen is not None:
        certificate, key = args.tls_certificate, args.tls_key
        federation = FederationTls(
            args.federation_listen,
            Path(certificate).resolve() if certificate else config.federation.tls_certificate_path,
            Path(key).resolve() if key else config.federation.tls_private_key_path,
        )
    elif args.tls_certificate is not None or args.tls_key is not None:
        raise CommandError("--tls-certificate and --tls-key go with --federation-listen")
    print(nginx_config(config, listen=args.listen, federation=federation), end="")


def _run(args: argparse.Namespace) -> None:
    import asyncio

    from peyvand.cli.deployment_run import run_deployment
    from peyvand.config.loader import load_config

    instances = load_config(args.config).workers.instances
    if not instances:
        raise CommandError("the config has no 'workers.instances': run 'peyvand serve' instead")
    code = asyncio.run(run_deployment(args.config, [(i.name, i.url) for i in instances]))
    if code:
        raise SystemExit(code)


def deployment_routes() -> list[RoutedPath]:
    """Every route of the server with its role (imports every API module: only the
    command that prints the configuration pays for it)."""
    from peyvand.api.admin import ADMIN_ROUTE_TABLES
    from peyvand.api.client import CLIENT_ROUTE_TABLES
    from peyvand.api.federation import FEDERATION_ROUTE_TABLES
    from peyvand.api.media import MEDIA_ROUTE_TABLES
    from peyvand.api.roles import routed_paths

    return routed_paths(
        CLIENT_ROUTE_TABLES, MEDIA_ROUTE_TABLES, FEDERATION_ROUTE_TABLES, ADMIN_ROUTE_TABLES
    )


@dataclass(frozen=True, slots=True)
class FederationTls:
    """Where nginx terminates federation TLS (Server-Server API, "Server discovery": the
    port other servers connect to), with which certificate and key."""

    listen: str
    certificate: Path | str | None
    key: Path | str | None


def nginx_config(config: Config, *, listen: str, federation: FederationTls | None = None) -> str:
    """The nginx configuration of ``config``'s deployment, listening on ``listen`` and,
    with ``federation``, over TLS on ``federation.listen`` too (the same routing)."""
    instances = config.workers.instances
    if not instances:
        raise CommandError("the config has no 'workers.instances': one process needs no routing")
    tls: list[str] = []
    if federation is not None:
        if not config.federation.enabled:
            raise CommandError("--federation-listen needs 'federation.enabled = true'")
        if federation.certificate is None or federation.key is None:
            raise CommandError(
                "--federation-listen needs --tls-certificate and --tls-key (or the config's "
                "federation.tls_certificate_path and tls_private_key_path)"
            )
        tls = [
            f"    ssl_certificate {_quoted(federation.certificate)};",
            f"    ssl_certificate_key {_quoted(federation.key)};",
        ]
    lines = [
        "# Generated by 'peyvand deployment nginx' (docs/scaling.md); include it in nginx.conf's",
        "# http block. Regenerate it when [workers] or Peyvand's version changes. Set the",
        "# config's http.trusted_proxies to this nginx's address: the processes then take",
        "# each client's address from X-Forwarded-For (per-IP rate limits).",
        "",
        "# One user's requests go to one process of a role: by access token.",
        "map $http_authorization $peyvand_client {",
        "    default $http_authorization;",
        '    "" $arg_access_token;',
        "}",
        "",
    ]
    writers = config.workers.with_role("event_writer")
    for role in ROUTED_ROLES:
        if role == "event_writer":
            # With several event writers, the primary takes every write but a room's
            # events: the first, another while it is down (``wiring.primary``).
            lines += _upstream(role, writers[:1], backups=writers[1:])
        elif role in ("client_reader", "media", "federation_inbound"):
            # Any process answers any user's reads and media (the media store is shared)
            # and takes in other servers' transactions (it hands their events to their
            # rooms' writers): the writers stand in for a lone process of these roles.
            lines += _upstream(role, config.workers.with_role(role), backups=writers)
        else:
            lines += _upstream(role, config.workers.with_role(role))
    routes = deployment_routes()
    lines += _role_map(routes, by_room=len(writers) > 1)
    upstream = "peyvand_$peyvand_role"
    if len(writers) > 1:
        lines += _room_writers(writers)
        upstream = "$peyvand_upstream"
    limits = _Limits(
        max(config.max_request_size, config.media.max_upload_size), proxy_read_timeout()
    )
    lines += _server(f"{listen};", limits, upstream=upstream)
    if federation is not None:
        lines += ["", "# Federation: TLS ends here; the same paths go to the same roles."]
        lines += _server(f"{federation.listen} ssl;", limits, tls, upstream=upstream)
    return "\n".join(lines) + "\n"


def proxy_read_timeout() -> int:
    """Seconds nginx waits for an answer: the longest long-poll timeout a client may ask
    for (``/sync``, the legacy ``/events``, sliding sync) and ``LONG_POLL_MARGIN_SECONDS``."""
    from peyvand.api.client import legacy_sync, sliding_sync, sync

    longest_ms = max(sync.MAX_TIMEOUT_MS, legacy_sync.MAX_TIMEOUT_MS, sliding_sync.MAX_TIMEOUT_MS)
    return longest_ms // 1000 + LONG_POLL_MARGIN_SECONDS


@dataclass(frozen=True, slots=True)
class _Limits:
    body_bytes: int
    read_timeout_seconds: int


def _quoted(path: Path | str) -> str:
    """A path as an nginx string (quoted, its quotes and backslashes escaped)."""
    text = str(path).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _upstream(
    role: str, instances: Sequence[WorkerInstance], backups: Sequence[WorkerInstance] = ()
) -> list[str]:
    """The processes of ``role``, a user's requests to one of them (by access token) and,
    while none answers, to another; ``backups`` take a lone process's requests while it
    is down (nginx has no backups with ``hash``)."""
    servers = [f"    server {_address(i)} max_fails=1 fail_timeout=5s;" for i in instances]
    if len(instances) == 1 and backups:
        servers += [
            f"    server {_address(b)} max_fails=1 fail_timeout=5s backup;"
            for b in backups
            if b not in instances
        ]
    else:
        servers.insert(0, "    hash $peyvand_client consistent;")
    return [f"upstream peyvand_{role} {{", *servers, "    keepalive 32;", "}", ""]


def _address(instance: WorkerInstance) -> str:
    host = f"[{instance.bind}]" if ":" in instance.bind else instance.bind
    return f"{host}:{instance.port}"


def _role_map(routes: Sequence[RoutedPath], *, by_room: bool) -> list[str]:
    """``$peyvand_role`` from the request's method and decoded path; the default role
    takes what no listed pattern matches. ``by_room``: a room's event writes have the
    role ``room_writer`` (several event writers, ``_room_writers``)."""
    lines = ['map "$request_method $uri" $peyvand_role {', f"    default {DEFAULT_ROLE};"]
    seen: set[str] = set()
    for routed in routes:
        role = ROOM_WRITER if by_room and routed.by_room else routed.role
        if role == DEFAULT_ROLE:
            continue
        method = "(?:GET|HEAD)" if routed.method == "GET" else routed.method
        key = f'"~^{method} {routed.pattern.removeprefix("^")}"'
        if key not in seen:
            seen.add(key)
            lines.append(f"    {key} {role};")
    return [*lines, "}", ""]


def _room_writers(writers: Sequence[WorkerInstance]) -> list[str]:
    """One upstream per event writer, the writer of the room a path names
    (``room_owners.shard_of``: the first character of the room ID's opaque part; the
    other writers as its backups), and
    ``$peyvand_upstream``: that writer's upstream for a room's event write, the role's
    otherwise."""
    from peyvand.services.timeline.room_owners import shard_characters

    lines: list[str] = []
    for index, writer in enumerate(writers):
        # The others take the writer's rooms over while it is down (``room_holders``).
        others = [*writers[index + 1 :], *writers[:index]]
        lines += [
            f"upstream peyvand_writer_{index} {{",
            f"    server {_address(writer)} max_fails=1 fail_timeout=5s;",
            *(f"    server {_address(o)} max_fails=1 fail_timeout=5s backup;" for o in others),
            "    keepalive 32;",
            "}",
            "",
        ]
    lines += ["map $uri $peyvand_room_shard {", "    default 0;"]
    for index in range(1, len(writers)):
        # Every character as a PCRE escape: none is special to nginx or the class.
        characters = "".join(f"\\x{ord(c):02x}" for c in shard_characters(index, len(writers)))
        lines.append(f'    "~^/_matrix/client/[^/]+/rooms/![{characters}]" {index};')
        lines.append(
            '    "~^/_matrix/federation/v[12]/(?:send_join|send_leave|send_knock)/'
            f'![{characters}]" {index};'
        )
    lines += [
        "}",
        "",
        "map $peyvand_role $peyvand_upstream {",
        "    default peyvand_$peyvand_role;",
        f"    {ROOM_WRITER} peyvand_writer_$peyvand_room_shard;",
        "}",
        "",
    ]
    return lines


def _server(listen: str, limits: _Limits, tls: Sequence[str] = (), *, upstream: str) -> list[str]:
    """A server block; ``listen`` is the directive's arguments, ``;`` included;
    ``upstream`` the variable naming where a request goes."""
    return [
        "server {",
        f"    listen {listen}",
        *tls,
        f"    client_max_body_size {limits.body_bytes};",
        "    # Requests between the processes never come from outside.",
        "    location /_peyvand/internal/ {",
        "        return 404;",
        "    }",
        "    # Each process's metrics are scraped from it directly, never through here.",
        "    location = /_peyvand/metrics {",
        "        return 404;",
        "    }",
        "    location / {",
        f"        proxy_pass http://{upstream};",
        "        proxy_http_version 1.1;",
        '        proxy_set_header Connection "";',
        "        proxy_set_header Host $host;",
        "        proxy_set_header X-Forwarded-For $remote_addr;",
        f"        proxy_read_timeout {limits.read_timeout_seconds}s;",
        "        proxy_buffering off;",
        "        # Never after a timeout: the request may be running there (a long-poll).",
        "        proxy_next_upstream error;",
        "    }",
        "}",
    ]
