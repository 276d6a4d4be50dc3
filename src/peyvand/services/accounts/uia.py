"""User-interactive authentication (Client-Server API, "User-interactive authentication API").

An endpoint protected by UIA declares its flows (lists of stage types) and a checker per
stage. A client first calls without ``auth`` and gets 401 with the flows and a session ID;
it then completes stages one request at a time, quoting the session, until the completed
stages cover one whole flow. Sessions live in memory and expire after an hour.

A session is bound to the operation that started it and to the user making it, so stages
completed for one request cannot authorise a different one (as Synapse does). It also
remembers the request parameters it was started with (``clientdict``): a later request
of the same session that sends none gets those back ("User-interactive API in the REST
API": clients may send only ``auth`` once the session exists). A ``reusable`` session
(registration) stays complete until it expires, so a retried request succeeds again, and
carries data its operation stores on it (``set_session_data``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from peyvand.errors import Errcode, MatrixError
from peyvand.lru import LRU
from peyvand.types import JsonDict

DUMMY = "m.login.dummy"
PASSWORD = "m.login.password"
REGISTRATION_TOKEN = "m.login.registration_token"

# A stage checker validates the ``auth`` dict of one stage; it raises MatrixError to fail it.
StageChecker = Callable[[Mapping[str, Any]], Awaitable[None]]
Flows = Sequence[Sequence[str]]

_SESSION_LIFETIME_S = 3600.0
_MAX_SESSIONS = 100_000


class AuthIncomplete(MatrixError):
    """The 401 answer of an unfinished UIA: flows, params, session, completed stages, and
    the error of the stage just attempted, if it failed ("User-interactive API in the REST
    API")."""

    def __init__(
        self,
        flows: Flows,
        params: JsonDict,
        session: str,
        completed: Sequence[str],
        error: MatrixError | None = None,
    ) -> None:
        super().__init__(
            error.errcode if error else Errcode.UNAUTHORIZED,
            error.message if error else "Additional authentication is required",
            status=401,
        )
        self.flows = flows
        self.params = params
        self.session = session
        self.completed = list(completed)
        self.failed = error is not None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "flows": [{"stages": list(flow)} for flow in self.flows],
            "params": self.params,
            "session": self.session,
        }
        body["completed"] = self.completed
        if self.failed:
            body["errcode"] = self.errcode.value
            body["error"] = self.message
        return body


@dataclass(slots=True)
class _Session:
    operation: str
    user_id: str | None
    created: float
    clientdict: dict[str, Any]
    completed: list[str] = field(default_factory=list)
    done: bool = False
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UiaResult:
    """A completed UIA: its session and the request parameters to act on (the request's
    own, or those the session was started with if the request sent none)."""

    session_id: str
    clientdict: Mapping[str, Any]


class UserInteractiveAuth:
    """The UIA sessions of this server and the protocol that drives them."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # Read with ``peek`` only, so the eviction order is creation order and expired
        # sessions are the oldest; past _MAX_SESSIONS the oldest is dropped.
        self._sessions: LRU[str, _Session] = LRU(_MAX_SESSIONS)

    async def check(
        self,
        auth: Mapping[str, Any] | None,
        *,
        flows: Flows,
        checkers: Mapping[str, StageChecker],
        operation: str,
        user_id: str | None,
        params: JsonDict | None = None,
        clientdict: Mapping[str, Any] | None = None,
        reusable: bool = False,
    ) -> UiaResult:
        """Return once ``auth`` completes a flow; otherwise raise ``AuthIncomplete``.

        ``operation`` names what is being authorised (e.g. ``"POST /account/password"``);
        ``user_id`` is the authenticated user, or None for registration. ``clientdict``
        holds the request's parameters (None values count as absent).
        """
        self._expire()
        params = params or {}
        given = {k: v for k, v in (clientdict or {}).items() if v is not None}
        session_id = auth.get("session") if auth is not None else None
        if session_id is None:
            session_id, session = self._create(operation, user_id, given)
        else:
            session = self._existing(session_id, operation, user_id)
        result = UiaResult(session_id, given or session.clientdict)
        if session.done:
            return result
        stage = auth.get("type") if auth is not None else None
        if stage is not None:
            if (
                not isinstance(stage, str)
                or stage not in checkers
                or not any(stage in flow for flow in flows)
            ):
                raise MatrixError(Errcode.UNRECOGNIZED, "Unrecognised auth type", status=400)
            try:
                await checkers[stage](auth or {})
            except MatrixError as exc:
                raise AuthIncomplete(flows, params, session_id, session.completed, exc) from None
            if stage not in session.completed:
                session.completed.append(stage)
        if any(set(flow) <= set(session.completed) for flow in flows):
            if reusable:
                session.done = True
            else:
                self._sessions.pop(session_id)
            return result
        raise AuthIncomplete(flows, params, session_id, session.completed)

    def session_data(self, auth: Mapping[str, Any] | None, key: str) -> Any:
        """What the operation stored under ``key`` on the session ``auth`` names (None if
        nothing, or no such session)."""
        session_id = auth.get("session") if auth is not None else None
        session = self._sessions.peek(session_id) if isinstance(session_id, str) else None
        return None if session is None else session.data.get(key)

    def set_session_data(self, session_id: str, key: str, value: Any) -> None:
        session = self._sessions.peek(session_id)
        if session is not None:
            session.data[key] = value

    def _create(
        self, operation: str, user_id: str | None, clientdict: dict[str, Any]
    ) -> tuple[str, _Session]:
        session_id = secrets.token_urlsafe(18)
        session = _Session(operation, user_id, self._clock(), clientdict)
        self._sessions.put(session_id, session)
        return session_id, session

    def _existing(self, session_id: Any, operation: str, user_id: str | None) -> _Session:
        session = self._sessions.peek(session_id) if isinstance(session_id, str) else None
        if session is None:
            raise MatrixError(Errcode.UNKNOWN, "Unknown or expired session ID")
        if session.operation != operation or session.user_id != user_id:
            raise MatrixError(
                Errcode.FORBIDDEN,
                "Requested operation has changed during the UI authentication session",
            )
        return session

    def _expire(self) -> None:
        horizon = self._clock() - _SESSION_LIFETIME_S
        while (oldest := self._sessions.oldest()) is not None and oldest[1].created < horizon:
            self._sessions.pop(oldest[0])
