"""Request authentication between servers: the ``X-Matrix`` Authorization scheme
(Server-Server API, "Request Authentication").

The sender signs ``{"method", "uri", "origin", "destination", "content"?}`` with its
server key and sends the signature in the header; the receiver rebuilds the same JSON from
the request it got and checks the signature with the origin's key (from the key ring).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from signedjson.types import SigningKey, VerifyKey

from peyvand.events.signing import sign_json, verify_json_signature
from peyvand.types import ServerName

# RFC 9110 token characters; colons are allowed unquoted for older servers (the spec).
_PARAM: Final = re.compile(
    r"""\s*([A-Za-z0-9!#$%&'*+.^_`|~-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[A-Za-z0-9!#$%&'*+.^_`|~:/=-]*)\s*(?:,|$)"""
)
_ESCAPE: Final = re.compile(r"\\(.)")


@dataclass(frozen=True, slots=True)
class XMatrixAuth:
    origin: ServerName
    destination: ServerName | None
    key: str
    sig: str


def request_json(
    method: str, uri: str, origin: ServerName, destination: ServerName, content: Any | None
) -> dict[str, Any]:
    """The object that is signed; ``uri`` is the path with its query string."""
    signed: dict[str, Any] = {
        "method": method.upper(),
        "uri": uri,
        "origin": origin,
        "destination": destination,
    }
    if content is not None:
        signed["content"] = content
    return signed


def authorization_header(
    origin: ServerName,
    signing_key: SigningKey,
    destination: ServerName,
    method: str,
    uri: str,
    content: Any | None = None,
) -> str:
    """The ``Authorization`` header value for a request from ``origin`` to ``destination``."""
    signed = sign_json(request_json(method, uri, origin, destination, content), origin, signing_key)
    ((key, sig),) = signed["signatures"][origin].items()
    return f'X-Matrix origin="{origin}",destination="{destination}",key="{key}",sig="{sig}"'


def parse_authorization(header: str) -> XMatrixAuth:
    """The parameters of an ``X-Matrix`` header; ValueError when it is not one."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "x-matrix" or not params.strip():
        raise ValueError("not an X-Matrix authorization")
    values: dict[str, str] = {}
    position = 0
    params = params.strip()
    while position < len(params):
        match = _PARAM.match(params, position)
        if match is None or match.end() == position:
            raise ValueError("malformed X-Matrix parameters")
        name, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = _ESCAPE.sub(r"\1", value[1:-1])
        values.setdefault(name, value)
        position = match.end()
    try:
        return XMatrixAuth(
            ServerName(values["origin"]),
            _server_name_or_none(values.get("destination")),
            values["key"],
            values["sig"],
        )
    except KeyError as exc:
        raise ValueError(f"X-Matrix authorization without {exc.args[0]}") from None


def _server_name_or_none(value: str | None) -> ServerName | None:
    return None if value is None else ServerName(value)


def verify_request(
    auth: XMatrixAuth,
    verify_key: VerifyKey,
    *,
    method: str,
    uri: str,
    destination: ServerName,
    content: Any | None,
) -> bool:
    """True if ``auth.sig`` signs this request with ``verify_key`` (whose ID is ``auth.key``)."""
    signed = request_json(method, uri, auth.origin, destination, content)
    signed["signatures"] = {auth.origin: {auth.key: auth.sig}}
    return verify_json_signature(signed, auth.origin, verify_key)
