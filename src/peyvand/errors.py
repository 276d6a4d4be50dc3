"""The one Matrix error model (Client-Server API, "Standard error response").

    MatrixError(errcode, message, **extra)
     ├── every error the API answers with; its HTTP status comes from STATUS_FOR_ERRCODE
     └── unless overridden per instance with ``status=``

Services raise MatrixError; one handler in ``api`` turns it into JSON. Anything else
that escapes a handler is logged and answered as 500 M_UNKNOWN without internals.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Errcode(StrEnum):
    FORBIDDEN = "M_FORBIDDEN"
    UNKNOWN_TOKEN = "M_UNKNOWN_TOKEN"
    MISSING_TOKEN = "M_MISSING_TOKEN"
    USER_LOCKED = "M_USER_LOCKED"
    USER_SUSPENDED = "M_USER_SUSPENDED"
    BAD_JSON = "M_BAD_JSON"
    NOT_JSON = "M_NOT_JSON"
    NOT_FOUND = "M_NOT_FOUND"
    LIMIT_EXCEEDED = "M_LIMIT_EXCEEDED"
    UNRECOGNIZED = "M_UNRECOGNIZED"
    UNKNOWN = "M_UNKNOWN"
    UNAUTHORIZED = "M_UNAUTHORIZED"
    USER_DEACTIVATED = "M_USER_DEACTIVATED"
    USER_IN_USE = "M_USER_IN_USE"
    INVALID_USERNAME = "M_INVALID_USERNAME"
    ROOM_IN_USE = "M_ROOM_IN_USE"
    INVALID_ROOM_STATE = "M_INVALID_ROOM_STATE"
    THREEPID_IN_USE = "M_THREEPID_IN_USE"
    THREEPID_NOT_FOUND = "M_THREEPID_NOT_FOUND"
    THREEPID_AUTH_FAILED = "M_THREEPID_AUTH_FAILED"
    THREEPID_MEDIUM_NOT_SUPPORTED = "M_THREEPID_MEDIUM_NOT_SUPPORTED"
    SERVER_NOT_TRUSTED = "M_SERVER_NOT_TRUSTED"
    UNSUPPORTED_ROOM_VERSION = "M_UNSUPPORTED_ROOM_VERSION"
    INCOMPATIBLE_ROOM_VERSION = "M_INCOMPATIBLE_ROOM_VERSION"
    BAD_STATE = "M_BAD_STATE"
    GUEST_ACCESS_FORBIDDEN = "M_GUEST_ACCESS_FORBIDDEN"
    MISSING_PARAM = "M_MISSING_PARAM"
    INVALID_PARAM = "M_INVALID_PARAM"
    TOO_LARGE = "M_TOO_LARGE"
    EXCLUSIVE = "M_EXCLUSIVE"
    RESOURCE_LIMIT_EXCEEDED = "M_RESOURCE_LIMIT_EXCEEDED"
    CANNOT_LEAVE_SERVER_NOTICE_ROOM = "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM"
    WEAK_PASSWORD = "M_WEAK_PASSWORD"
    UNABLE_TO_AUTHORISE_JOIN = "M_UNABLE_TO_AUTHORISE_JOIN"
    UNABLE_TO_GRANT_JOIN = "M_UNABLE_TO_GRANT_JOIN"
    NOT_YET_UPLOADED = "M_NOT_YET_UPLOADED"
    CANNOT_OVERWRITE_MEDIA = "M_CANNOT_OVERWRITE_MEDIA"
    UNKNOWN_POS = "M_UNKNOWN_POS"
    URL_NOT_SET = "M_URL_NOT_SET"
    BAD_STATUS = "M_BAD_STATUS"
    CONNECTION_FAILED = "M_CONNECTION_FAILED"
    CONNECTION_TIMEOUT = "M_CONNECTION_TIMEOUT"
    BAD_ALIAS = "M_BAD_ALIAS"
    DUPLICATE_ANNOTATION = "M_DUPLICATE_ANNOTATION"
    INVALID_SIGNATURE = "M_INVALID_SIGNATURE"
    WRONG_ROOM_KEYS_VERSION = "M_WRONG_ROOM_KEYS_VERSION"
    INVITE_BLOCKED = "M_INVITE_BLOCKED"
    PROFILE_TOO_LARGE = "M_PROFILE_TOO_LARGE"
    KEY_TOO_LARGE = "M_KEY_TOO_LARGE"
    APPSERVICE_LOGIN_UNSUPPORTED = "M_APPSERVICE_LOGIN_UNSUPPORTED"
    UNKNOWN_DEVICE = "M_UNKNOWN_DEVICE"


STATUS_FOR_ERRCODE: dict[Errcode, int] = {
    Errcode.FORBIDDEN: 403,
    Errcode.UNKNOWN_TOKEN: 401,
    Errcode.MISSING_TOKEN: 401,
    Errcode.USER_LOCKED: 401,
    Errcode.USER_SUSPENDED: 403,
    Errcode.BAD_JSON: 400,
    Errcode.NOT_JSON: 400,
    Errcode.NOT_FOUND: 404,
    Errcode.LIMIT_EXCEEDED: 429,
    Errcode.UNRECOGNIZED: 404,
    Errcode.UNKNOWN: 400,
    Errcode.UNAUTHORIZED: 401,
    Errcode.USER_DEACTIVATED: 403,
    Errcode.USER_IN_USE: 400,
    Errcode.INVALID_USERNAME: 400,
    Errcode.ROOM_IN_USE: 400,
    Errcode.INVALID_ROOM_STATE: 400,
    Errcode.THREEPID_IN_USE: 400,
    Errcode.THREEPID_NOT_FOUND: 400,
    Errcode.THREEPID_AUTH_FAILED: 400,
    Errcode.THREEPID_MEDIUM_NOT_SUPPORTED: 400,
    Errcode.SERVER_NOT_TRUSTED: 400,
    Errcode.UNSUPPORTED_ROOM_VERSION: 400,
    Errcode.INCOMPATIBLE_ROOM_VERSION: 400,
    Errcode.BAD_STATE: 400,
    Errcode.GUEST_ACCESS_FORBIDDEN: 403,
    Errcode.MISSING_PARAM: 400,
    Errcode.INVALID_PARAM: 400,
    Errcode.TOO_LARGE: 413,
    Errcode.EXCLUSIVE: 400,
    Errcode.UNKNOWN_DEVICE: 400,
    Errcode.RESOURCE_LIMIT_EXCEEDED: 403,
    Errcode.CANNOT_LEAVE_SERVER_NOTICE_ROOM: 403,
    Errcode.WEAK_PASSWORD: 400,
    Errcode.UNABLE_TO_AUTHORISE_JOIN: 400,
    Errcode.UNABLE_TO_GRANT_JOIN: 502,
    Errcode.NOT_YET_UPLOADED: 504,
    Errcode.CANNOT_OVERWRITE_MEDIA: 409,
    Errcode.UNKNOWN_POS: 400,
    Errcode.URL_NOT_SET: 400,
    Errcode.BAD_STATUS: 502,
    Errcode.CONNECTION_FAILED: 502,
    Errcode.CONNECTION_TIMEOUT: 504,
    Errcode.BAD_ALIAS: 400,
    Errcode.DUPLICATE_ANNOTATION: 400,
    Errcode.INVALID_SIGNATURE: 400,
    Errcode.WRONG_ROOM_KEYS_VERSION: 403,
    Errcode.INVITE_BLOCKED: 403,
    Errcode.PROFILE_TOO_LARGE: 400,
    Errcode.KEY_TOO_LARGE: 400,
    Errcode.APPSERVICE_LOGIN_UNSUPPORTED: 400,
}


class MatrixError(Exception):
    """An error answered to a client as ``{"errcode": ..., "error": ..., **extra}``."""

    def __init__(
        self, errcode: Errcode, message: str, *, status: int | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.errcode = errcode
        self.message = message
        self.status = status if status is not None else STATUS_FOR_ERRCODE[errcode]
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"errcode": self.errcode.value, "error": self.message, **self.extra}


class ProcessUnreachable(MatrixError):
    """Another process of a deployment could not be connected to (issue 21): the request
    never reached it, so it may be asked of another (a 503 to a client otherwise)."""

    def __init__(self) -> None:
        super().__init__(
            Errcode.UNKNOWN, "Another process of this server did not answer", status=503
        )


def forbidden(message: str) -> MatrixError:
    return MatrixError(Errcode.FORBIDDEN, message)


def not_found(message: str) -> MatrixError:
    return MatrixError(Errcode.NOT_FOUND, message)


def bad_json(message: str) -> MatrixError:
    return MatrixError(Errcode.BAD_JSON, message)


def invalid_param(message: str) -> MatrixError:
    return MatrixError(Errcode.INVALID_PARAM, message)


def missing_param(message: str) -> MatrixError:
    return MatrixError(Errcode.MISSING_PARAM, message)
