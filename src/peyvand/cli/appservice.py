"""``peyvand appservice``: list and check the application service registrations.

``list`` prints each registration the config names (ID, URL, bot, namespaces and the
optional features it asked for); ``check`` validates them, or the files given, with the
checks ``peyvand serve`` makes at start and on SIGHUP (fields, regexes, duplicate IDs,
tokens and bots, overlapping exclusive namespaces) and exits 1 naming the first problem.
Neither needs the server running. The registration modules (and YAML) are imported only
when the command runs: ``peyvand --help`` stays light.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from peyvand.cli.errors import CommandError
from peyvand.config.loader import load_config


def add_appservice_command(commands: Any) -> None:
    """Add ``appservice`` to the ``peyvand`` command parser's ``add_subparsers()``."""
    appservice = commands.add_parser(
        "appservice",
        help="list and check application service (bridge, bot) registrations",
        description="The application services named by app_service_config_files.",
    )
    sub = appservice.add_subparsers(dest="appservice_command", required=True, metavar="COMMAND")
    listing = sub.add_parser("list", help="show each registration the config names")
    listing.add_argument("--config", required=True, type=Path, help="the config file")
    listing.set_defaults(handler=_list)
    check = sub.add_parser(
        "check",
        help="validate registrations as the server does at start",
        description="Validate the registrations the config names, or FILE... instead "
        "(checked together, as if the config named them). Exit status 1 on a problem.",
    )
    check.add_argument("--config", required=True, type=Path, help="the config file")
    check.add_argument("files", nargs="*", type=Path, metavar="FILE", help="registration files")
    check.set_defaults(handler=_check)


def _load(config_path: Path, files: list[Path] | None = None) -> tuple[Any, ...]:
    from peyvand.services.appservice.registration import RegistrationError, load_registrations

    config = load_config(config_path)
    paths = [p.resolve() for p in files] if files else list(config.app_service_config_files)
    try:
        return load_registrations(paths, config.server_name)
    except RegistrationError as exc:
        raise CommandError(str(exc)) from exc


def _namespaces(kind: str, namespaces: tuple[Any, ...]) -> str:
    return ", ".join(
        f"{kind} {ns.regex}{' (exclusive)' if ns.exclusive else ''}" for ns in namespaces
    )


def _list(args: argparse.Namespace) -> None:
    services = _load(args.config)
    if not services:
        print("no application services (app_service_config_files is empty)")
    for service in services:
        features = [
            name
            for name, on in (
                ("rate-limited", service.rate_limited),
                ("ephemeral", service.receive_ephemeral),
                ("msc3202", service.msc3202),
                ("msc4190", service.msc4190),
            )
            if on
        ]
        print(f"{service.id}: {service.source}")
        print(f"  url: {service.url or '(none: the server pushes nothing)'}")
        print(f"  bot: {service.sender}")
        for kind in ("users", "aliases", "rooms"):
            if namespaces := getattr(service, kind):
                print(f"  {_namespaces(kind, namespaces)}")
        if service.protocols:
            print(f"  protocols: {', '.join(service.protocols)}")
        if service.ip_range_whitelist:
            print(f"  as_token accepted from: {', '.join(map(str, service.ip_range_whitelist))}")
        print(f"  features: {', '.join(features) or 'none'}")


def _check(args: argparse.Namespace) -> None:
    services = _load(args.config, args.files)
    print(f"{len(services)} registration(s) OK: {', '.join(s.id for s in services) or '-'}")
