"""Canonical JSON (Appendices, "Signing JSON" > "Canonical JSON").

Every hash and signature in Matrix is computed over the canonical encoding: the shortest
UTF-8 JSON with object keys sorted by code point. Room versions 6 and later (so every
version Peyvand supports) also require the *values* to be canonical: integers only, in
``[-(2**53)+1, (2**53)-1]``, no floats (rooms v6 "Canonical JSON"; a violation is a 400
``M_BAD_JSON`` on the Client-Server API and a dropped event over federation).
"""

from __future__ import annotations

import math
import re
from typing import Final

import canonicaljson

MIN_INT: Final = -(2**53) + 1
MAX_INT: Final = 2**53 - 1
# Containers nested deeper than this are refused. serde_json (Conduit and other Rust
# servers) refuses more than 128 levels, so such events could not federate anyway.
MAX_DEPTH: Final = 128

# Lone surrogates survive `json.loads` but cannot be encoded as UTF-8.
_SURROGATE_RE: Final = re.compile("[\ud800-\udfff]")


def encode_canonical_json(obj: object) -> bytes:
    """Encode ``obj`` as canonical JSON bytes (Appendices, "Canonical JSON").

    Raises ``ValueError`` for NaN/infinity or strings that are not valid Unicode and
    ``TypeError`` for values JSON cannot represent. It does not police integer ranges or
    floats: call ``check_canonical_json_values`` first on untrusted data.
    """
    return canonicaljson.encode_canonical_json(obj)


def check_canonical_json_values(
    obj: object, max_depth: int = MAX_DEPTH, *, strict: bool = True
) -> None:
    """Raise ``ValueError`` unless ``obj`` holds only values canonical JSON allows.

    Allowed: ``None``, ``bool``, ``str`` (valid Unicode), ``int`` in
    ``[MIN_INT, MAX_INT]``, ``list`` and ``dict`` with ``str`` keys, nested at most
    ``max_depth`` containers deep. Everything else, floats included, is refused
    (room versions >= 6, "Canonical JSON"). With ``strict=False`` (events of rooms v1-v5,
    rooms v1 "Canonical JSON") integers up to 64 bits (what storage can hold; Synapse's
    limit too) and finite floats are allowed too.
    """
    _check(obj, max_depth, "", strict)


def _check(value: object, depth_left: int, path: str, strict: bool) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        low, high = (MIN_INT, MAX_INT) if strict else (-(2**63), 2**63 - 1)
        if not low <= value <= high:
            raise ValueError(f"integer out of canonical JSON range at {path or '<root>'}")
        return
    if isinstance(value, str):
        _check_string(value, path)
        return
    if isinstance(value, float):
        if strict or not math.isfinite(value):
            raise ValueError(f"floats are not allowed in canonical JSON (at {path or '<root>'})")
        return
    if not isinstance(value, dict | list):
        raise ValueError(f"{type(value).__name__} is not a JSON value (at {path or '<root>'})")
    if depth_left <= 0:
        raise ValueError(f"JSON nested too deeply (at {path or '<root>'})")
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, depth_left - 1, f"{path}[{index}]", strict)
        return
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValueError(f"object key {key!r} is not a string (at {path or '<root>'})")
        _check_string(key, path)
        _check(item, depth_left - 1, f"{path}.{key}" if path else key, strict)


def _check_string(value: str, path: str) -> None:
    if _SURROGATE_RE.search(value):
        raise ValueError(f"string is not valid Unicode (at {path or '<root>'})")
