"""Another server's refusal, as this server passes it on to its client.

When a client request is carried out on another server (a join, knock, invite or leave
over federation) and that server refuses it with a 4xx Matrix error, the client gets that
status and ``errcode`` (a ban is 403 ``M_FORBIDDEN`` on both servers), as Synapse does
(``HttpResponseException.to_synapse_error``): the body's other fields are kept, except
that ``M_UNKNOWN_TOKEN`` becomes ``M_UNKNOWN`` and 401 becomes 400, which would otherwise
log the client out. Servers that cannot be reached, and 5xx answers, stay 502 for the
caller to report.
"""

from __future__ import annotations

from typing import Any

from peyvand.errors import Errcode, MatrixError
from peyvand.federation.client import FederationHttpError

_KNOWN_ERRCODES = frozenset(e.value for e in Errcode)
# A 4xx with one of these lets the next server be tried (Synapse's failover for joins:
# the room or the user who could authorise a restricted join is not on that server).
JOIN_FAILOVER_ERRCODES = frozenset(
    {
        Errcode.NOT_FOUND.value,
        Errcode.UNABLE_TO_AUTHORISE_JOIN.value,
        Errcode.UNABLE_TO_GRANT_JOIN.value,
    }
)


class RemoteRefusal(MatrixError):
    """A 4xx answer of another server, with its status, errcode, message and fields."""

    def __init__(self, status: int, errcode: str, message: str, fields: dict[str, Any]) -> None:
        known = errcode in _KNOWN_ERRCODES
        super().__init__(Errcode(errcode) if known else Errcode.UNKNOWN, message, status=status)
        self.remote_errcode = errcode
        self.extra = fields

    def to_json(self) -> dict[str, Any]:
        return {**self.extra, "errcode": self.remote_errcode, "error": self.message}


def is_refusal(exc: FederationHttpError) -> bool:
    """A 4xx answer: the request reached the server, which refused it."""
    return 400 <= exc.status < 500


def refusal(exc: FederationHttpError) -> RemoteRefusal:
    """``exc`` (a 4xx answer) as the error to give the client."""
    body = exc.body if isinstance(exc.body, dict) else {}
    errcode = exc.errcode if exc.errcode is not None else Errcode.UNKNOWN.value
    if errcode == Errcode.UNKNOWN_TOKEN.value:
        errcode = Errcode.UNKNOWN.value
    status = 400 if exc.status == 401 else exc.status
    fields = {k: v for k, v in body.items() if k not in ("errcode", "error")}
    return RemoteRefusal(status, errcode, exc.message, fields)


def join_refusal(exc: FederationHttpError) -> RemoteRefusal | None:
    """The error to give the client for a server's answer to make_join or send_join; None
    when the next server should be tried instead (5xx, or a failover errcode)."""
    if not is_refusal(exc) or exc.errcode in JOIN_FAILOVER_ERRCODES:
        return None
    return refusal(exc)
