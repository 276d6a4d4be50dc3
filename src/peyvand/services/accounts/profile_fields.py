"""The rules of profile fields (Client-Server API "Profiles", v1.16): which key names
are valid and how large a profile may grow.

A key is ``displayname``, ``avatar_url``, ``m.tz`` or a custom field named in the
Common Namespaced Identifier Grammar (Appendices): at most 255 bytes (longer is
``M_KEY_TOO_LARGE``), ``[a-z]`` then ``[a-z0-9_.-]``, as Synapse checks it. The whole
profile, as canonical JSON, stays within 64 KiB (``M_PROFILE_TOO_LARGE``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from peyvand.errors import Errcode, MatrixError
from peyvand.events.canonical_json import encode_canonical_json

DISPLAYNAME: Final = "displayname"
AVATAR_URL: Final = "avatar_url"
# Fields kept in the users table, copied into member events; any other is a custom field.
MEMBER_FIELDS: Final = frozenset({DISPLAYNAME, AVATAR_URL})
MAX_KEY_BYTES: Final = 255
MAX_PROFILE_BYTES: Final = 64 * 1024
_KEY_GRAMMAR: Final = re.compile(r"[a-z][a-z0-9_.-]*")


def check_key(key: str) -> None:
    """400 ``M_KEY_TOO_LARGE`` or ``M_INVALID_PARAM`` for a key no profile may hold."""
    if not key:
        raise MatrixError(Errcode.INVALID_PARAM, "Field name too short")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise MatrixError(Errcode.KEY_TOO_LARGE, f"Field name too long (max {MAX_KEY_BYTES})")
    if not _KEY_GRAMMAR.fullmatch(key):
        raise MatrixError(
            Errcode.INVALID_PARAM,
            "Field name does not follow Common Namespaced Identifier Grammar",
        )


def check_size(profile: Mapping[str, Any], key: str, value: Any) -> None:
    """400 ``M_PROFILE_TOO_LARGE`` if ``profile`` with ``key`` set to ``value`` is over
    64 KiB of canonical JSON ("the total profile MUST be under 64 KiB")."""
    if len(encode_canonical_json({**profile, key: value})) > MAX_PROFILE_BYTES:
        raise MatrixError(
            Errcode.PROFILE_TOO_LARGE, f"Profile too large (max {MAX_PROFILE_BYTES} bytes)"
        )
