"""The HTTP client between the processes of a deployment (issue 21, "Forwarding").

Requests go to another process's internal API (``/_peyvand/internal/v1/...``, mounted
on every process of a deployment, closed by the reverse proxy) and carry the deployment's
shared secret as a bearer token (``read_secret``; ``api.server`` compares it). Every
request is bounded by a timeout and reads at most ``MAX_ANSWER_BYTES`` of answer. A
Matrix error answered by the other process is raised unchanged (status, errcode, message
and its other fields); a process that cannot be reached, or answers something else, is a
503 ``M_UNKNOWN``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Final

import aiohttp
import orjson

from peyvand.errors import Errcode, MatrixError, ProcessUnreachable
from peyvand.types import JsonDict

__all__ = ["WorkerClient", "read_secret"]

logger = logging.getLogger(__name__)

MAX_ANSWER_BYTES: Final = 64 * 1024 * 1024
# A forwarded write waits for the writer's group commit, which can queue behind others.
DEFAULT_TIMEOUT: Final = 30.0


def read_secret(path: Path) -> str:
    """The deployment's shared secret, from its file (surrounding whitespace ignored)."""
    return path.read_text(encoding="utf-8").strip()


class WorkerClient:
    """JSON requests to one other process (``url``) of the deployment."""

    def __init__(self, url: str, secret: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def post(self, path: str, body: JsonDict, *, within: float | None = None) -> JsonDict:
        """The JSON object answered with 200 to ``body`` at ``path`` (within ``within``
        seconds, the client's own by default); the other process's Matrix error raised
        as it answered it."""
        if self._session is None:
            await self.start()
        assert self._session is not None
        seconds = self._timeout if within is None else within
        try:
            async with asyncio.timeout(seconds):
                async with self._session.post(
                    self._url + path,
                    data=orjson.dumps(body),
                    headers=self._headers,
                    allow_redirects=False,
                ) as response:
                    raw = await response.content.read(MAX_ANSWER_BYTES + 1)
                    status = response.status
        except TimeoutError:
            raise _unavailable(f"{path}: no answer within {seconds} s") from None
        except aiohttp.ClientConnectorError as exc:
            logger.warning("request to another process failed: %s: %s", path, exc)
            raise ProcessUnreachable from None
        except aiohttp.ClientError as exc:
            raise _unavailable(f"{path}: {exc}") from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise _unavailable(f"{path}: answer too large")
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise _unavailable(f"{path}: answered {status} without a JSON object")
        if status != 200:
            raise _matrix_error(status, answer)
        return answer


def _unavailable(reason: str) -> MatrixError:
    logger.warning("request to another process failed: %s", reason)
    return MatrixError(Errcode.UNKNOWN, "Another process of this server did not answer", status=503)


def _matrix_error(status: int, answer: dict[str, Any]) -> MatrixError:
    """The other process's error answer as the ``MatrixError`` that produced it."""
    fields = dict(answer)
    errcode, message = fields.pop("errcode", None), fields.pop("error", "")
    try:
        code = Errcode(errcode)
    except ValueError:
        code = Errcode.UNKNOWN
    return MatrixError(code, str(message), status=status, **fields)
