"""Declarative request-body validation (Client-Server API "Standard error response").

A handler reads its body through ``Body``: a missing required key is ``M_MISSING_PARAM``,
a value of the wrong type ``M_BAD_JSON``, a value out of range ``M_INVALID_PARAM``. No
handler repeats these checks by hand.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any, TypeVar, overload

from peyvand.errors import Errcode, MatrixError
from peyvand.events.canonical_json import MAX_INT, MIN_INT
from peyvand.types import JsonDict

T = TypeVar("T")
_MISSING: Any = object()

_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    bool: "a boolean",
    dict: "an object",
    list: "an array",
}


class Body:
    """A JSON object from a request, with typed accessors that raise Matrix errors."""

    __slots__ = ("data",)

    def __init__(self, data: JsonDict) -> None:
        self.data = data

    def __contains__(self, key: builtins.str) -> builtins.bool:
        return key in self.data

    def _get(
        self, key: builtins.str, kind: type[T], default: Any, *, nullable: builtins.bool = False
    ) -> T:
        if key not in self.data:
            if default is _MISSING:
                raise MatrixError(Errcode.MISSING_PARAM, f"Missing parameter: {key}")
            return default  # type: ignore[no-any-return]
        value = self.data[key]
        if value is None and nullable:
            return default  # type: ignore[no-any-return]
        ok = isinstance(value, kind) and not (
            kind is builtins.int and isinstance(value, builtins.bool)
        )
        if not ok:
            raise MatrixError(
                Errcode.BAD_JSON, f"'{key}' must be {_TYPE_NAMES.get(kind, kind.__name__)}"
            )
        return value  # type: ignore[no-any-return]

    @overload
    def str(self, key: builtins.str) -> builtins.str: ...
    @overload
    def str(self, key: builtins.str, default: T) -> builtins.str | T: ...
    def str(self, key: builtins.str, default: Any = _MISSING) -> Any:
        return self._get(key, builtins.str, default, nullable=default is not _MISSING)

    @overload
    def int(
        self,
        key: builtins.str,
        *,
        minimum: builtins.int = MIN_INT,
        maximum: builtins.int = MAX_INT,
    ) -> builtins.int: ...
    @overload
    def int(
        self,
        key: builtins.str,
        default: T,
        *,
        minimum: builtins.int = MIN_INT,
        maximum: builtins.int = MAX_INT,
    ) -> builtins.int | T: ...
    def int(
        self,
        key: builtins.str,
        default: Any = _MISSING,
        *,
        minimum: builtins.int = MIN_INT,
        maximum: builtins.int = MAX_INT,
    ) -> Any:
        """An integer in ``[minimum, maximum]`` (by default the canonical JSON range,
        so that every integer read fits a BIGINT column); M_INVALID_PARAM outside it."""
        value = self._get(key, builtins.int, default, nullable=default is not _MISSING)
        if value is not default and not minimum <= value <= maximum:
            raise MatrixError(
                Errcode.INVALID_PARAM, f"'{key}' must be between {minimum} and {maximum}"
            )
        return value

    def bool(self, key: builtins.str, default: builtins.bool | None = None) -> builtins.bool:
        value = self._get(key, builtins.bool, _MISSING if default is None else default)
        return bool(value)

    @overload
    def dict(self, key: builtins.str) -> JsonDict: ...
    @overload
    def dict(self, key: builtins.str, default: T) -> JsonDict | T: ...
    def dict(self, key: builtins.str, default: Any = _MISSING) -> Any:
        return self._get(key, dict, default, nullable=default is not _MISSING)

    @overload
    def list(self, key: builtins.str) -> builtins.list[Any]: ...
    @overload
    def list(self, key: builtins.str, default: T) -> builtins.list[Any] | T: ...
    def list(self, key: builtins.str, default: Any = _MISSING) -> Any:
        return self._get(key, list, default, nullable=default is not _MISSING)

    def str_list(
        self, key: builtins.str, default: builtins.list[builtins.str] | None = None
    ) -> builtins.list[builtins.str]:
        values = self.list(key, _MISSING if default is None else default)
        if not all(isinstance(v, builtins.str) for v in values):
            raise MatrixError(Errcode.BAD_JSON, f"'{key}' must be an array of strings")
        return list(values)

    def one_of(
        self, key: builtins.str, allowed: tuple[builtins.str, ...], default: Any = _MISSING
    ) -> Any:
        value = self.str(key, default)
        if value is not default and value not in allowed:
            raise MatrixError(Errcode.INVALID_PARAM, f"'{key}' must be one of {', '.join(allowed)}")
        return value


def query_int(
    query: Mapping[str, str],
    key: str,
    default: int,
    *,
    minimum: int = 0,
    maximum: int = MAX_INT,
) -> int:
    """An integer query parameter, ``M_INVALID_PARAM`` if malformed or out of range (at
    most the canonical JSON maximum unless narrower, so it fits a BIGINT column)."""
    raw = query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise MatrixError(Errcode.INVALID_PARAM, f"'{key}' must be an integer") from None
    if not minimum <= value <= maximum:
        raise MatrixError(Errcode.INVALID_PARAM, f"'{key}' is out of range")
    return value


def query_bool(query: Mapping[str, str], key: str, default: bool) -> bool:
    raw = query.get(key)
    if raw is None:
        return default
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise MatrixError(Errcode.INVALID_PARAM, f"'{key}' must be true or false")
