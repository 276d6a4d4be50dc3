"""Third-party networks (Client-Server API, "Third-party Lookup"), answered by the
appservices that bridge them (Application Service API, "Third-party Networks").

An appservice lists the protocols it bridges in its registration (``protocols``); a
client's question about a protocol is passed to each of them at
``/_matrix/app/v1/thirdparty/...`` at once, and their answers merged as Synapse merges
them: a protocol's metadata is the first appservice's, with every appservice's
``instances`` (each given ``instance_id`` = ``{appservice ID}|{network_id}``, the value
``third_party_instance_id`` takes in the room directory); lookups are the concatenation
of every valid result. An appservice that fails, times out or answers nonsense is left
out (logged), never failing the client's request.

Each appservice's description of a protocol is kept for ``PROTOCOL_TTL`` (an hour, as
Synapse's ``protocol_meta_cache``), and one question is shared by the clients asking
meanwhile, so clients listing protocols do not each cost a request to every bridge. A
failed answer is kept for ``FAILED_PROTOCOL_TTL`` only (Synapse keeps it the hour): a
bridge that starts after the homeserver is listed a minute later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal
from urllib.parse import quote

from peyvand.errors import Errcode, MatrixError
from peyvand.federation.appservice_client import (
    APP_PREFIX,
    AppServiceClient,
    AppServiceError,
    AppServiceTarget,
)
from peyvand.lru import LRU
from peyvand.services.appservice.registration import ApplicationService
from peyvand.services.appservice.registry import AppServiceRegistry
from peyvand.types import JsonDict

__all__ = ["ThirdPartyKind", "ThirdPartyLookups", "instance_id"]

logger = logging.getLogger(__name__)

LOOKUP_TIME_LIMIT: Final = 10.0  # seconds, for one appservice's answer
PROTOCOL_TTL: Final = 3600.0  # seconds an appservice's protocol description is kept
FAILED_PROTOCOL_TTL: Final = 60.0  # seconds a failure to describe one is kept
_PROTOCOL_CACHE_SIZE: Final = 1024

ThirdPartyKind = Literal["location", "user"]
# The field naming the Matrix side of a result, besides "protocol" and "fields".
_MATRIX_FIELD: Final[Mapping[ThirdPartyKind, str]] = {"location": "alias", "user": "userid"}


def instance_id(appservice_id: str, network_id: str) -> str:
    """A protocol instance's ID, as Synapse forms it (``ThirdPartyInstanceID``)."""
    return f"{appservice_id}|{network_id}"


def _valid_result(result: Any, kind: ThirdPartyKind) -> bool:
    return (
        isinstance(result, dict)
        and all(isinstance(result.get(k), str) for k in (_MATRIX_FIELD[kind], "protocol"))
        and isinstance(result.get("fields"), dict)
    )


class ThirdPartyLookups:
    def __init__(
        self,
        registry: AppServiceRegistry,
        client: AppServiceClient,
        *,
        time_limit: float = LOOKUP_TIME_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._client = client
        self._time_limit = time_limit
        self._clock = clock
        # (appservice ID, URL, protocol) -> (until when, its description or None).
        self._protocols: LRU[
            tuple[str, str, str], tuple[float, asyncio.Future[JsonDict | None]]
        ] = LRU(_PROTOCOL_CACHE_SIZE)

    def _bridging(self, protocol: str | None) -> list[ApplicationService]:
        """The appservices with a URL bridging ``protocol`` (any protocol if None)."""
        return [
            s
            for s in self._registry.services
            if s.url is not None and (s.protocols if protocol is None else protocol in s.protocols)
        ]

    async def _get(self, service: ApplicationService, path: str, query: Mapping[str, str]) -> Any:
        """The appservice's answer, or None if it failed."""
        assert service.url is not None
        try:
            return await self._client.request(
                AppServiceTarget(service.url, service.hs_token),
                "GET",
                f"{APP_PREFIX}/thirdparty/{path}",
                query=dict(query),
                time_limit=self._time_limit,
            )
        except AppServiceError as exc:
            logger.warning("third-party lookup of appservice %s failed: %s", service.id, exc)
            return None

    async def _protocol_of(self, service: ApplicationService, protocol: str) -> JsonDict | None:
        """The appservice's description of ``protocol`` (kept, see the module's
        docstring); None if it failed."""
        assert service.url is not None
        key = (service.id, service.url, protocol)
        cached = self._protocols.get(key)
        if cached is not None and (not cached[1].done() or cached[0] > self._clock()):
            return await asyncio.shield(cached[1])
        asked = asyncio.ensure_future(self._ask_protocol(service, protocol))
        self._protocols.put(key, (self._clock() + PROTOCOL_TTL, asked))
        asked.add_done_callback(lambda done: self._answered(key, done))
        return await asyncio.shield(asked)

    def _answered(self, key: tuple[str, str, str], answer: asyncio.Future[JsonDict | None]) -> None:
        failed = answer.cancelled() or answer.exception() is not None or answer.result() is None
        ttl = FAILED_PROTOCOL_TTL if failed else PROTOCOL_TTL
        self._protocols.put(key, (self._clock() + ttl, answer))

    async def _ask_protocol(self, service: ApplicationService, protocol: str) -> JsonDict | None:
        info = await self._get(service, f"protocol/{quote(protocol, safe='')}", {})
        if not isinstance(info, dict) or not isinstance(info.get("instances"), list):
            return None
        instances = [dict(i) for i in info["instances"] if isinstance(i, dict)]
        for instance in instances:
            network_id = instance.get("network_id")
            if isinstance(network_id, str):
                instance["instance_id"] = instance_id(service.id, network_id)
        return {**info, "instances": instances}

    async def protocols(self, only: str | None = None) -> dict[str, JsonDict]:
        """``GET /thirdparty/protocols``: each bridged protocol's merged metadata (a
        protocol no appservice described is left out)."""
        asked = [
            (protocol, service)
            for service in self._bridging(only)
            for protocol in service.protocols
            if only is None or protocol == only
        ]
        answers = await asyncio.gather(*(self._protocol_of(s, p) for p, s in asked))
        merged: dict[str, JsonDict] = {}
        for (protocol, _), info in zip(asked, answers, strict=True):
            if info is None:
                continue
            if protocol in merged:
                merged[protocol]["instances"].extend(info["instances"])
            else:
                # A copy: the kept description is not to grow other appservices' instances.
                merged[protocol] = {**info, "instances": list(info["instances"])}
        return merged

    async def protocol(self, protocol: str) -> JsonDict:
        """``GET /thirdparty/protocol/{protocol}``; 404 if no appservice describes it."""
        info = (await self.protocols(protocol)).get(protocol)
        if info is None:
            raise MatrixError(Errcode.NOT_FOUND, "Unknown protocol")
        return info

    async def lookup(
        self, kind: ThirdPartyKind, protocol: str | None, fields: Mapping[str, str]
    ) -> list[JsonDict]:
        """``GET /thirdparty/{kind}/{protocol}`` with the client's ``fields``, or without
        a protocol the reverse lookup (``alias`` or ``userid``) of every bridge."""
        if protocol is None:
            services: Sequence[ApplicationService] = self._bridging(None)
            path: str = kind
        else:
            services, path = self._bridging(protocol), f"{kind}/{quote(protocol, safe='')}"
        answers = await asyncio.gather(*(self._get(s, path, fields) for s in services))
        return [
            result
            for answer in answers
            if isinstance(answer, list)
            for result in answer
            if _valid_result(result, kind)
        ]
