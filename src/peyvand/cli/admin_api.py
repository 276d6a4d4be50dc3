"""The running server's admin API, for the commands that go through it (``erase-user``,
``retention``, ``reports``, ``policy-lists``).

These commands do not open the database: the running server caches access tokens,
events, profiles and policies, so they ask the server itself, over HTTP, with a server
admin's access token (``--token`` or the environment variable ``PEYVAND_ADMIN_TOKEN``,
which keeps it out of the process list). The server is found at the config's ``bind``
and ``port`` (a server listening on every address at the loopback one) unless ``--url``
names it. Every failure is a ``CommandError``: the server's ``errcode`` and ``error``
when it refuses, ``cannot reach the server at URL`` when it does not answer.

Only the standard library is imported: ``peyvand --help`` stays light.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peyvand.cli.errors import CommandError

TOKEN_VARIABLE = "PEYVAND_ADMIN_TOKEN"
ADMIN_PREFIX = "/_peyvand/admin/v1"

# A server listening on every address is reached on the loopback one.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """``--config``: where the server's ``bind`` and ``port`` are found."""
    parser.add_argument("--config", required=True, type=Path, help="the config file")


def add_connection_arguments(parser: argparse.ArgumentParser, *, timeout: float) -> None:
    """``--url``, ``--token`` and ``--timeout`` (default ``timeout`` seconds); with
    ``add_config_argument``, what ``AdminAPI.from_args`` reads."""
    parser.add_argument(
        "--url", help="the server's base URL (default: http://BIND:PORT from the config)"
    )
    parser.add_argument(
        "--token", help=f"a server admin's access token (default: ${TOKEN_VARIABLE})"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=timeout,
        help=f"seconds to wait for the server (default {timeout:g})",
    )


@dataclass(frozen=True, slots=True)
class AdminAPI:
    """Where the server is and how to ask it."""

    base_url: str
    token: str
    timeout: float

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AdminAPI:
        """From ``add_connection_arguments``' options (the config is read, and must be
        valid, even with ``--url``); the token is checked first."""
        from peyvand.config.loader import load_config

        token = admin_token(args.token)
        config = load_config(args.config)
        base_url = args.url or local_base_url(config.bind, config.port)
        return cls(base_url, token, args.timeout)

    def get(self, path: str, query: Mapping[str, str | int | None] | None = None) -> dict[str, Any]:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("POST", path, body=body)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str | int | None] | None = None,
    ) -> dict[str, Any]:
        return request_json(
            self.base_url, self.token, method, path, body=body, query=query, timeout=self.timeout
        )


def admin_token(given: str | None) -> str:
    """``given`` (``--token``) or ``$PEYVAND_ADMIN_TOKEN``; ``CommandError`` if neither."""
    token = given or os.environ.get(TOKEN_VARIABLE)
    if not token:
        raise CommandError(f"a server admin's access token is needed: --token or ${TOKEN_VARIABLE}")
    return token


def local_base_url(bind: str, port: int) -> str:
    """``http://host:port`` for a server listening on ``bind``:``port``."""
    host = _LOOPBACK.get(bind, bind)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def segment(value: str, safe: str = "@:!") -> str:
    """``value`` (a user, room or event ID) as one path segment."""
    return urllib.parse.quote(value, safe=safe)


def request_json(
    base_url: str,
    token: str,
    method: str,
    path: str,
    *,
    body: Mapping[str, Any] | None = None,
    query: Mapping[str, str | int | None] | None = None,
    timeout: float,
) -> dict[str, Any]:
    """The server's JSON object answer to ``method path`` (``query`` entries that are
    ``None`` are left out); ``CommandError`` if the server cannot be reached, refuses or
    does not answer a JSON object."""
    if not base_url.startswith(("http://", "https://")):
        raise CommandError(f"not an http:// or https:// URL: {base_url!r}")
    url = base_url.rstrip("/") + path
    if query:
        params = {k: str(v) for k, v in query.items() if v is not None}
        if params:
            url += "?" + urllib.parse.urlencode(params)
    headers = {"Authorization": f"Bearer {token}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise CommandError(f"the server refused: {_error_text(exc)}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise CommandError(f"cannot reach the server at {base_url}: {reason}") from exc
    except ValueError as exc:  # a URL urllib cannot use (a bad port or IPv6 address)
        raise CommandError(f"cannot reach the server at {base_url}: {exc}") from exc
    try:
        answer = json.loads(raw)
    except ValueError as exc:
        raise CommandError(f"the server at {base_url} did not answer JSON") from exc
    if not isinstance(answer, dict):
        raise CommandError(f"the server at {base_url} did not answer a JSON object")
    return answer


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read())
    except (ValueError, OSError, http.client.HTTPException):
        error = None
    if isinstance(error, dict) and "errcode" in error:
        return f"{exc.code} {error['errcode']}: {error.get('error', '')}".rstrip(": ")
    return f"HTTP {exc.code} {exc.reason}"
