"""The query of a jump-to-date request, read the same way for clients (Client-Server API
``GET /rooms/{roomId}/timestamp_to_event``) and other servers (Server-Server API ``GET
/timestamp_to_event/{roomId}``): ``ts`` (milliseconds, required) and ``dir`` (``f`` or
``b``, required)."""

from __future__ import annotations

from collections.abc import Mapping

from peyvand.api.validation import query_int
from peyvand.errors import Errcode, MatrixError
from peyvand.services.rooms.timestamp_lookup import Direction


def timestamp_query(params: Mapping[str, str]) -> tuple[int, Direction]:
    """``(ts, dir)``: ``M_MISSING_PARAM`` when either is absent, ``M_INVALID_PARAM`` when
    ``ts`` is no integer in range or ``dir`` neither ``f`` nor ``b``."""
    for key in ("ts", "dir"):
        if not params.get(key):
            raise MatrixError(Errcode.MISSING_PARAM, f"Missing '{key}' query parameter")
    timestamp = query_int(params, "ts", 0)
    direction = params["dir"]
    if direction == "f":
        return timestamp, "f"
    if direction == "b":
        return timestamp, "b"
    raise MatrixError(Errcode.INVALID_PARAM, "'dir' must be 'f' or 'b'")
