"""Limits every JSON value from outside meets, checked once where it is parsed.

Whatever the server accepts it must be able to store and serve back. The encoder
(orjson) refuses to write containers nested 255 deep, so a value accepted at, say, 250
levels and later wrapped in a /sync response would break that user's every sync; a
U+0000 cannot be stored in a PostgreSQL ``TEXT`` column; an integer beyond 64 bits
cannot be encoded at all. So:

- a client's request body may nest at most ``MAX_DEPTH`` (128) containers (the limit of
  an event's content too, see ``canonical_json.MAX_DEPTH``) and no string or object key
  may contain U+0000 (as for PDUs, ``received.py``);
- a body from another server may nest at most ``MAX_FEDERATION_DEPTH`` containers: a
  transaction wraps each event or EDU in a few levels of its own, and each PDU and EDU
  inside is then held to ``MAX_DEPTH`` on its own, so one bad event never costs the rest;
- every integer must fit the encoder: ``[-(2**63), 2**64 - 1]``. Narrower ranges (the
  canonical JSON range of events, a column's range) are the business of whoever reads
  the field.

The walk is iterative (no recursion limit) and skipped when the raw bytes show it cannot
fail: fewer brackets than the depth limit, no ``\\u0000`` or surrogate escape, no
16-digit number.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import orjson

from peyvand.events.canonical_json import MAX_DEPTH

# Room for a transaction's own levels around an event's or an EDU's content
# (``edus[i].content.messages.<user>.<device>``) and well below the encoder's 254.
MAX_FEDERATION_DEPTH: Final = MAX_DEPTH + 32
MIN_ENCODABLE_INT: Final = -(2**63)
MAX_ENCODABLE_INT: Final = 2**64 - 1

# What the raw bytes show when the walk is needed: a run of 16 digits (2**53 has 16, so
# without one no integer is beyond it), a \u0000 escape, or a surrogate escape (the
# standard library decodes a lone one, which no encoder can write back).
_MAY_BREAK: Final = re.compile(rb"\d{16}|\\u0000|\\u[dD][89a-fA-F]")
# A string holding half of a surrogate pair.
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


class NotJson(ValueError):
    """The bytes are not JSON (Client-Server API: ``M_NOT_JSON``)."""


class UnacceptableJson(ValueError):
    """JSON, but beyond a limit above (``M_BAD_JSON``)."""


def parse_client_json(raw: bytes) -> Any:
    """A client's request body, parsed and checked (``NotJson``, ``UnacceptableJson``).

    An empty body is ``{}``, as Synapse treats it.
    """
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise NotJson("Content not JSON.") from None
    if _may_break_limits(raw, MAX_DEPTH):
        check_json_value(value, max_depth=MAX_DEPTH)
    return value


def parse_federation_json(raw: bytes, *, exact_ints: bool) -> Any:
    """A body from another server, held to ``MAX_FEDERATION_DEPTH``; ``None`` for an
    empty body.

    ``exact_ints`` for a signed request: the standard library keeps integers exact
    (orjson turns those beyond 64 bits into floats, which would no longer match what the
    origin signed); responses, whose PDUs carry their own hashes, take orjson's speed.
    The other limits (strings, integers) are left to whoever reads each item:
    ``check_json_value`` on the whole body, or on each PDU and EDU of a transaction.
    """
    if not raw.strip():
        return None
    try:
        value = json.loads(raw, parse_constant=_no_constant) if exact_ints else orjson.loads(raw)
    except (ValueError, RecursionError):
        raise NotJson("Content not JSON.") from None
    if _may_break_limits(raw, MAX_FEDERATION_DEPTH):
        check_json_value(value, max_depth=MAX_FEDERATION_DEPTH, depth_only=True)
    return value


def check_json_value(value: Any, *, max_depth: int = MAX_DEPTH, depth_only: bool = False) -> None:
    """Raise ``UnacceptableJson`` if ``value`` nests more than ``max_depth`` containers
    or, unless ``depth_only``, holds an integer beyond the encoder's range or a string or
    key with U+0000 or that is not valid Unicode (a lone surrogate)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise UnacceptableJson(f"JSON nested more than {max_depth} levels deep")
            if isinstance(item, dict):
                if not depth_only:
                    for key in item:
                        _check_string(key)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)
        elif depth_only:
            continue
        elif isinstance(item, str):
            _check_string(item)
        elif (
            isinstance(item, int)
            and not isinstance(item, bool)
            and not MIN_ENCODABLE_INT <= item <= MAX_ENCODABLE_INT
        ):
            raise UnacceptableJson("Integer out of range")


def _check_string(value: str) -> None:
    if "\x00" in value:
        raise UnacceptableJson("Strings and keys must not contain U+0000")
    if _SURROGATE.search(value):
        raise UnacceptableJson("Strings and keys must be valid Unicode")


def _may_break_limits(raw: bytes, max_depth: int) -> bool:
    return raw.count(b"{") + raw.count(b"[") > max_depth or _MAY_BREAK.search(raw) is not None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
