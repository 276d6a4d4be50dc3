"""The ``peyvand`` command line: argument parsing and dispatch to one module per command.

Every command is non-interactive. Exit status: 0 on success, 1 when the command fails
(the reason goes to stderr), 2 for bad usage (argparse's own convention).

The modules that pull in the whole server (``serve``, ``register``, ``audit``) are imported
only by the commands that need them, so ``generate-config`` and ``--help`` stay light.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from peyvand import __version__
from peyvand.cli.appservice import add_appservice_command
from peyvand.cli.deployment import add_deployment_command
from peyvand.cli.erase import add_erase_command
from peyvand.cli.errors import CommandError
from peyvand.cli.export import add_export_command
from peyvand.cli.generate import (
    CONFIG_FILE_NAME,
    GenerateOptions,
    generate_config,
    split_server_name,
)
from peyvand.cli.logs import setup_logging
from peyvand.cli.loop import run
from peyvand.cli.policy_lists import add_policy_lists_command
from peyvand.cli.reports import add_reports_command
from peyvand.cli.retention import add_retention_command
from peyvand.cli.server_notices import add_server_notice_command
from peyvand.config.loader import ConfigError, as_worker, load_config

DEV_DATA_DIR = Path("data")
DEV_SERVER_NAME = "localhost"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command named in ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (CommandError, ConfigError) as exc:
        print(f"peyvand {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    parser = argparse.ArgumentParser(prog="peyvand", description="The Peyvand Matrix homeserver.")
    parser.add_argument("--version", action="version", version=f"peyvand {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser(
        "generate-config",
        help="write a documented config file and a signing key",
        description="Write DATA_DIR/peyvand.toml (every option documented) and a new "
        "signing key DATA_DIR/signing.key (an existing key is kept).",
    )
    gen.add_argument("--server-name", required=True, help="the server name, e.g. example.com")
    gen.add_argument("--data-dir", required=True, type=Path, help="directory for the data")
    gen.add_argument("--bind", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    gen.add_argument("--port", type=_port, default=8008, help="listen port (default 8008)")
    gen.add_argument(
        "--database-url",
        help="postgresql://user:pw@host:port/db (default: SQLite in DATA_DIR/homeserver.db)",
    )
    gen.add_argument(
        "--open-registration",
        action="store_true",
        help="let anyone register without a token (development only)",
    )
    gen.add_argument(
        "--no-rate-limits", action="store_true", help="disable rate limits (tests, benchmarks)"
    )
    gen.add_argument(
        "--config-path",
        type=Path,
        help=f"where to write the config (default DATA_DIR/{CONFIG_FILE_NAME})",
    )
    gen.add_argument(
        "--federation-port",
        type=_port,
        help="enable federation with a TLS listener on this port; unless it is 8448 it is "
        "appended to the server name (example.com:8449). The certificate goes in "
        "DATA_DIR/tls.crt and its key in DATA_DIR/tls.key",
    )
    gen.add_argument(
        "--test-network",
        action="store_true",
        help="FOR TEST NETWORKS ONLY: accept peers' self-signed certificates and private or "
        "loopback peer addresses, and generate a self-signed certificate (DATA_DIR/tls.crt) "
        "for the server name's host, localhost and 127.0.0.1. Never on the Internet",
    )
    gen.add_argument("--force", action="store_true", help="overwrite an existing config file")
    gen.set_defaults(handler=_generate_config)

    serve = commands.add_parser("serve", help="run the homeserver")
    serve.add_argument("--config", required=True, type=Path, help="the config file")
    serve.add_argument(
        "--worker",
        metavar="NAME",
        help="which process of the config's 'workers.instances' this is (docs/scaling.md)",
    )
    serve.set_defaults(handler=_serve)

    register = commands.add_parser(
        "register-user",
        help="create an account directly in the database",
        description="Create an account without going through the HTTP API (the server "
        "may be running or not). Fails if the user ID is taken.",
    )
    register.add_argument("--config", required=True, type=Path, help="the config file")
    register.add_argument("--user", required=True, help="the localpart, e.g. alice")
    register.add_argument("--password", required=True, help="the new account's password")
    register.add_argument("--admin", action="store_true", help="make the user a server admin")
    register.set_defaults(handler=_register_user)

    audit = commands.add_parser(
        "audit",
        help="the audit log of admin actions",
        description="The audit log of admin actions (see docs/compliance.md).",
    )
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    verify = audit_commands.add_parser(
        "verify",
        help="check the audit log's hash chain",
        description="Re-compute the audit log's hash chain from the first entry (the server "
        "may be running). Exit status 1, naming the first bad entry, if an entry was changed, "
        "removed, reordered or inserted.",
    )
    verify.add_argument("--config", required=True, type=Path, help="the config file")
    verify.set_defaults(handler=_audit_verify)

    add_export_command(commands)
    add_erase_command(commands)
    add_retention_command(commands)
    add_reports_command(commands)
    add_server_notice_command(commands)
    add_deployment_command(commands)
    add_policy_lists_command(commands)
    add_appservice_command(commands)

    hold = commands.add_parser(
        "hold",
        help="legal holds: content kept from retention, purges and erasure",
        description="Legal holds (see docs/compliance.md): place, release and list them (the "
        "server may be running). Recorded in the audit log as cli:hold. Dates are ISO 8601, "
        "UTC unless an offset is given (2024-03-31 or 2024-03-31T18:00:00Z); a bare --until "
        "date means the end of that day.",
    )
    hold_commands = hold.add_subparsers(dest="hold_command", required=True, metavar="COMMAND")
    place = hold_commands.add_parser(
        "place",
        help="place a hold on a user or a room",
        description="Hold a room's events or a user's events (optionally only those sent "
        "between --since and --until) until the hold is released.",
    )
    place.add_argument("--config", required=True, type=Path, help="the config file")
    place.add_argument("--kind", required=True, choices=["room", "user"], help="what to hold")
    place.add_argument("--target", required=True, help="the room ID or user ID")
    place.add_argument("--case", required=True, dest="case_id", help="the case identifier")
    place.add_argument("--reason", required=True, help="why (recorded with the hold)")
    place.add_argument("--since", help="hold only events sent at or after this date")
    place.add_argument("--until", help="hold only events sent at or before this date")
    place.set_defaults(handler=_hold_place)
    release = hold_commands.add_parser(
        "release", help="release a hold", description="Release an active hold."
    )
    release.add_argument("--config", required=True, type=Path, help="the config file")
    release.add_argument("--id", required=True, dest="hold_id", help="the hold's ID")
    release.add_argument("--reason", required=True, help="why (recorded with the hold)")
    release.set_defaults(handler=_hold_release)
    hold_list = hold_commands.add_parser(
        "list", help="list the holds", description="List the active holds, oldest first."
    )
    hold_list.add_argument("--config", required=True, type=Path, help="the config file")
    hold_list.add_argument("--all", action="store_true", help="include released holds")
    hold_list.set_defaults(handler=_hold_list)

    dev = commands.add_parser(
        "dev",
        help="run a development server (generates its config on first run)",
        description="On first run, generate a development config in DATA_DIR (server name "
        "localhost, 127.0.0.1:8008, SQLite, open registration); then serve it.",
    )
    dev.add_argument(
        "--data-dir", type=Path, default=DEV_DATA_DIR, help=f"default ./{DEV_DATA_DIR}"
    )
    dev.set_defaults(handler=_dev)
    return parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return port


def _generate_config(args: argparse.Namespace) -> None:
    path = generate_config(
        GenerateOptions(
            server_name=args.server_name,
            data_dir=args.data_dir,
            bind=args.bind,
            port=args.port,
            database_url=args.database_url,
            open_registration=args.open_registration,
            rate_limits=not args.no_rate_limits,
            config_path=args.config_path,
            force=args.force,
            federation_port=args.federation_port,
            test_network=args.test_network,
        )
    )
    config = load_config(path)  # what was written must load: fail now rather than at serve time
    print(f"wrote {path}")
    federation = config.federation
    if federation.port is not None and not federation.test_network:
        print(
            f"note: the federation listener (port {federation.port}) needs a certificate "
            f"valid for {split_server_name(config.server_name)[0]} "
            "from a certificate authority peers trust: put its PEM chain in "
            f"{federation.tls_certificate_path} and its key in "
            f"{federation.tls_private_key_path} before 'peyvand serve'"
        )


def _serve(args: argparse.Namespace) -> None:
    config = as_worker(load_config(args.config), args.worker)
    from peyvand.cli.serve import serve

    setup_logging(config.log_level)
    run(serve(config))


def _register_user(args: argparse.Namespace) -> None:
    config = load_config(args.config)
    from peyvand.cli.register import register_user

    setup_logging("WARNING")
    user_id = run(register_user(config, args.user, args.password, admin=args.admin))
    print(f"registered {user_id}")


def _audit_verify(args: argparse.Namespace) -> None:
    config = load_config(args.config)
    from peyvand.cli.audit import verify_audit_log

    setup_logging("WARNING")
    print(run(verify_audit_log(config)))


def _hold_place(args: argparse.Namespace) -> None:
    config = load_config(args.config)
    from peyvand.cli.legal_hold import place_hold

    setup_logging("WARNING")
    print(
        run(
            place_hold(
                config, args.kind, args.target, args.case_id, args.reason, args.since, args.until
            )
        )
    )


def _hold_release(args: argparse.Namespace) -> None:
    config = load_config(args.config)
    from peyvand.cli.legal_hold import release_hold

    setup_logging("WARNING")
    print(run(release_hold(config, args.hold_id, args.reason)))


def _hold_list(args: argparse.Namespace) -> None:
    config = load_config(args.config)
    from peyvand.cli.legal_hold import list_holds

    setup_logging("WARNING")
    print(run(list_holds(config, include_released=args.all)))


def _dev(args: argparse.Namespace) -> None:
    from peyvand.cli.serve import serve

    config_path = args.data_dir / CONFIG_FILE_NAME
    if not config_path.exists():
        generate_config(
            GenerateOptions(
                server_name=DEV_SERVER_NAME, data_dir=args.data_dir, open_registration=True
            )
        )
        print(f"generated a development config in {config_path}", file=sys.stderr)
    config = load_config(config_path)
    setup_logging(config.log_level)
    run(serve(config))
