"""The key ring: other servers' signing keys, and signature checks made with them.

Server-Server API, "Retrieving server keys": a server publishes its keys at
``GET /_matrix/key/v2/server``, signed with those keys; notaries relay other servers' key
responses through ``POST /_matrix/key/v2/query``, adding their own signature.

A key needed to check a signature made at time T (an event's ``origin_server_ts``, or now
for a request) must be valid until at least T. It is looked up in this order:

1. this server's own key (no I/O);
2. the memory cache, then the database (one query for a whole batch);
3. the server itself (``GET /_matrix/key/v2/server``, unsigned);
4. each trusted notary in turn (``POST /_matrix/key/v2/query``), whose answer must carry
   the notary's signature as well as the origin's.

A key response counts only when its ``server_name`` is the server asked about and it is
signed by that server with a key it lists under ``verify_keys`` (every such signature must
verify). A key under ``verify_keys`` is valid until the response's ``valid_until_ts``,
capped at 7 days after it was fetched (room versions 5 and later, "Signing key validity
period"); one under ``old_verify_keys`` until its ``expired_ts``.

Concurrent lookups of one server share one fetch; a server that did not answer, or a key
still missing after asking everyone, is not asked about again for a minute.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeGuard

import orjson

from peyvand.events.signing import (
    ED25519,
    SigningKey,
    VerifyKey,
    decode_verify_key,
    get_verify_key,
    key_id,
    sign_json,
    verify_json_signature,
    verify_key_base64,
)
from peyvand.federation import request_auth
from peyvand.federation.request_auth import XMatrixAuth
from peyvand.storage.server_keys import KeyResponse, ServerKey, ServerKeyStore
from peyvand.types import JsonDict, ServerName, is_valid_server_name

logger = logging.getLogger(__name__)

# Room versions 5+: a key is never trusted for longer than this after it was fetched.
MAX_KEY_VALIDITY_MS: Final = 7 * 24 * 3600 * 1000
# How long a server that did not answer, or a key nobody had, is left alone.
NEGATIVE_CACHE_MS: Final = 60_000
# Bound on each outbound key request, and on how many run at once.
FETCH_TIMEOUT_S: Final = 30.0
MAX_CONCURRENT_FETCHES: Final = 32
# Keys kept in memory (the database has them all).
CACHE_SIZE: Final = 10_000

_FOREVER: Final = 2**63 - 1
_KEY_PREFIX: Final = f"{ED25519}:"


class KeyFetcher(Protocol):
    """``FederationTransport``, as far as the key ring needs it: parsed JSON of a
    response, or an exception for anything else (unreachable, timeout, non-2xx, not JSON)."""

    async def get_server_keys(self, server: ServerName) -> Any: ...

    async def query_server_keys(self, notary: ServerName, body: JsonDict) -> Any: ...


class InvalidKeyResponse(ValueError):
    """A key response that must not be trusted (wrong server, unsigned, forged...)."""


@dataclass(frozen=True, slots=True)
class _Key:
    verify_key: VerifyKey
    key_base64: str
    valid_until_ts: int


@dataclass(frozen=True, slots=True)
class _CheckedResponse:
    server_name: ServerName
    keys: dict[str, _Key]
    # The response with only the origin's signatures, as stored and served to others.
    json: JsonDict


class Keyring:
    def __init__(
        self,
        server_name: ServerName,
        signing_key: SigningKey,
        store: ServerKeyStore,
        fetcher: KeyFetcher,
        *,
        trusted_key_servers: tuple[ServerName, ...] = (),
        key_validity_period_ms: int,
        clock: Callable[[], float] = time.time,
        fetch_timeout_s: float = FETCH_TIMEOUT_S,
    ) -> None:
        self.server_name = server_name
        self._signing_key = signing_key
        self._own_key_id = key_id(signing_key)
        self._own_key = _Key(get_verify_key(signing_key), verify_key_base64(signing_key), _FOREVER)
        self._store = store
        self._fetcher = fetcher
        self._notaries = tuple(
            name for name in dict.fromkeys(trusted_key_servers) if name != server_name
        )
        self._validity_ms = key_validity_period_ms
        self._clock = clock
        self._fetch_timeout_s = fetch_timeout_s
        self._fetch_slots = asyncio.Semaphore(MAX_CONCURRENT_FETCHES)
        # (server, key ID) -> best key known; insertion order is eviction order.
        self._cache: dict[tuple[ServerName, str], _Key] = {}
        # Negative cache: server -> until when its direct fetch is not retried;
        # (server, key ID) -> until when a key nobody had is not asked for again.
        self._unreachable: dict[ServerName, int] = {}
        self._missing: dict[tuple[ServerName, str], int] = {}
        # (server, whether notaries are asked) -> the fetch under way.
        self._inflight: dict[tuple[ServerName, bool], asyncio.Task[None]] = {}
        self._own_doc: JsonDict | None = None
        self._own_doc_refresh_ts = 0

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def close(self) -> None:
        """Cancel the fetches under way (at shutdown)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    # -- this server's keys ------------------------------------------------------------

    def own_server_keys(self) -> JsonDict:
        """GET /_matrix/key/v2/server: this server's key document, signed with its key.

        Valid for the configured period; signed again once half of it has passed, so a
        response never expires sooner than half the period after it is served."""
        now = self._now_ms()
        if self._own_doc is None or now >= self._own_doc_refresh_ts:
            self._own_doc = sign_json(
                {
                    "server_name": self.server_name,
                    "verify_keys": {self._own_key_id: {"key": self._own_key.key_base64}},
                    "old_verify_keys": {},
                    "valid_until_ts": now + self._validity_ms,
                },
                self.server_name,
                self._signing_key,
            )
            self._own_doc_refresh_ts = now + self._validity_ms // 2
        return copy.deepcopy(self._own_doc)

    # -- looking keys up ---------------------------------------------------------------

    async def verify_event_signatures(
        self, checks: Sequence[tuple[ServerName, Mapping[str, Any], int]]
    ) -> list[bool]:
        """For each ``(server_name, redacted event JSON, origin_server_ts)``: whether the
        server signed the JSON ("Validating hashes and signatures on received events").

        Signatures by key IDs the ring cannot find, or by keys that expired before the
        event's timestamp, are skipped; the check passes when at least one signature
        remains and every remaining one is valid. Keys are looked up once per server for
        the whole batch."""
        key_ids = [_signature_key_ids(obj, server) for server, obj, _ in checks]
        needs: dict[ServerName, dict[str, int]] = {}
        for (server, _, ts), ids in zip(checks, key_ids, strict=True):
            server_needs = needs.setdefault(server, {})
            for kid in ids:
                server_needs[kid] = max(ts, server_needs.get(kid, ts))
        keys = await self._lookup(needs)
        results = []
        for (server, obj, ts), ids in zip(checks, key_ids, strict=True):
            usable = [
                key
                for kid in ids
                if (key := keys.get((server, kid))) is not None and key.valid_until_ts >= ts
            ]
            results.append(
                bool(usable)
                and all(verify_json_signature(obj, server, key.verify_key) for key in usable)
            )
        return results

    async def verify_request(
        self, auth: XMatrixAuth, *, method: str, uri: str, destination: ServerName, content: Any
    ) -> bool:
        """True if an inbound request's ``X-Matrix`` authorization is valid ("Request
        Authentication"): addressed to ``destination`` (this server) and signed by the
        origin with a key valid now. ``uri`` is the path with its query string."""
        if auth.destination is not None and auth.destination != destination:
            return False
        if not auth.key.startswith(_KEY_PREFIX):
            return False
        now = self._now_ms()
        found = (await self._lookup({auth.origin: {auth.key: now}})).get((auth.origin, auth.key))
        if found is None or found.valid_until_ts < now:
            return False
        return request_auth.verify_request(
            auth, found.verify_key, method=method, uri=uri, destination=destination, content=content
        )

    # -- answering as a notary ---------------------------------------------------------

    async def query_server_keys(
        self,
        query: Mapping[ServerName, Mapping[str, int | None]],
        *,
        minimum_valid_until_ts: int | None = None,
    ) -> list[JsonDict]:
        """POST /_matrix/key/v2/query (and GET .../query/{serverName}): the signed key
        responses of the servers asked about, each also signed by this server.

        ``query`` maps each server to the key IDs wanted and the ``minimum_valid_until_ts``
        each must reach (None: now); an empty mapping asks for all the server's keys,
        valid until ``minimum_valid_until_ts`` (default now). Stored responses that fall
        short are refreshed from the server itself; when it cannot be reached, the stored
        ones are answered anyway (so old signatures can still be checked) and a server
        with none is left out."""
        now = self._now_ms()
        default_min = now if minimum_valid_until_ts is None else minimum_valid_until_ts
        wanted = {
            server: {kid: now if ts is None else ts for kid, ts in key_ids.items()}
            for server, key_ids in query.items()
            if server != self.server_name
        }
        stored = _parse_stored(await self._store.get_responses(wanted)) if wanted else {}
        stale = {
            server: self._still_missing(server, key_ids)
            for server, key_ids in wanted.items()
            if is_valid_server_name(server)
            and not _covers(stored.get(server, []), key_ids, default_min)
        }
        stale = {
            server: key_ids
            for server, key_ids in stale.items()
            # All keys were asked for, or some asked for are worth asking the server about.
            if key_ids or not wanted[server]
        }
        if stale:
            async with asyncio.TaskGroup() as group:
                for server, key_ids in stale.items():
                    group.create_task(self._fetch_shared(server, key_ids, use_notaries=False))
            stored.update(_parse_stored(await self._store.get_responses(stale)))
        answers: list[JsonDict] = []
        for server in query:
            if server == self.server_name:
                answers.append(self.own_server_keys())
                continue
            for response in stored.get(server, []):
                answers.append(sign_json(response, self.server_name, self._signing_key))
        return answers

    # -- internals ---------------------------------------------------------------------

    async def _lookup(
        self, needs: Mapping[ServerName, Mapping[str, int]], *, use_notaries: bool = True
    ) -> dict[tuple[ServerName, str], _Key]:
        """The best key known for each ``{server: {key ID: valid until at least}}``,
        fetching those not known to be valid long enough. The keys returned may still
        fall short; callers compare ``valid_until_ts`` themselves."""
        found: dict[tuple[ServerName, str], _Key] = {}
        pending: dict[ServerName, dict[str, int]] = {}
        for server, key_ids in needs.items():
            for kid, min_ts in key_ids.items():
                if server == self.server_name:
                    if kid == self._own_key_id:
                        found[(server, kid)] = self._own_key
                    continue
                if not kid.startswith(_KEY_PREFIX):
                    continue
                cached = self._cache.get((server, kid))
                if cached is not None:
                    found[(server, kid)] = cached
                    if cached.valid_until_ts >= min_ts:
                        continue
                pending.setdefault(server, {})[kid] = min_ts
        if not pending:
            return found

        stored = await self._store.get_keys(
            [(server, kid) for server, key_ids in pending.items() for kid in key_ids]
        )
        for pair, row in stored.items():
            key = self._cache_key(pair, row.key, row.valid_until_ts)
            if key is None:
                continue
            found[pair] = key
            server, kid = pair
            if key.valid_until_ts >= pending[server][kid]:
                del pending[server][kid]

        to_fetch = {
            server: still
            for server, key_ids in pending.items()
            if is_valid_server_name(server) and (still := self._still_missing(server, key_ids))
        }
        if to_fetch:
            async with asyncio.TaskGroup() as group:
                for server, key_ids in to_fetch.items():
                    group.create_task(
                        self._fetch_shared(server, key_ids, use_notaries=use_notaries)
                    )
        # Also the keys a concurrent fetch cached while the store was read.
        for server, key_ids in pending.items():
            for kid in key_ids:
                if (cached := self._cache.get((server, kid))) is not None:
                    found[(server, kid)] = cached
        return found

    def _still_missing(self, server: ServerName, key_ids: Mapping[str, int]) -> dict[str, int]:
        """The key IDs not cached valid long enough, and not given up on recently."""
        now = self._now_ms()
        return {
            kid: min_ts
            for kid, min_ts in key_ids.items()
            if not self._is_valid_in_cache(server, kid, min_ts)
            and self._missing.get((server, kid), 0) <= now
        }

    def _is_valid_in_cache(self, server: ServerName, kid: str, min_ts: int) -> bool:
        cached = self._cache.get((server, kid))
        return cached is not None and cached.valid_until_ts >= min_ts

    async def _fetch_shared(
        self, server: ServerName, key_ids: Mapping[str, int], *, use_notaries: bool
    ) -> None:
        """Fetch ``server``'s keys unless a fetch is already under way, then join it; an
        empty ``key_ids`` just refreshes the server's keys."""
        slot = (server, use_notaries)
        while (task := self._inflight.get(slot)) is not None:
            await asyncio.wait([task])  # neither raises its errors nor passes on a cancel
            if not key_ids:
                return
            key_ids = self._still_missing(server, key_ids)
            if not key_ids:
                return
        task = asyncio.create_task(
            self._fetch(server, key_ids, use_notaries=use_notaries),
            name=f"keyring-fetch {server}",
        )
        self._inflight[slot] = task
        task.add_done_callback(lambda done: self._fetch_done(slot, done))
        await asyncio.wait([task])

    def _fetch_done(self, slot: tuple[ServerName, bool], task: asyncio.Task[None]) -> None:
        if self._inflight.get(slot) is task:
            del self._inflight[slot]
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("Key fetch for %s failed", slot[0], exc_info=exc)

    async def _fetch(
        self, server: ServerName, key_ids: Mapping[str, int], *, use_notaries: bool
    ) -> None:
        """Ask ``server`` itself, then (if allowed) each notary until every key is found."""
        if self._unreachable.get(server, 0) <= self._now_ms():
            try:
                response = await self._call(lambda: self._fetcher.get_server_keys(server))
                checked = _check_key_response(server, response, self._now_ms())
            except Exception as exc:
                logger.info("Could not fetch the keys of %s: %s", server, exc)
                self._unreachable[server] = self._now_ms() + NEGATIVE_CACHE_MS
                self._prune(self._unreachable)
            else:
                await self._remember([checked])

        missing = {
            kid: ts for kid, ts in key_ids.items() if not self._is_valid_in_cache(server, kid, ts)
        }
        if use_notaries:
            for notary in self._notaries:
                if not missing:
                    break
                if notary == server:
                    continue
                try:
                    await self._query_notary(notary, server, missing)
                except Exception as exc:
                    logger.info("Notary %s did not give the keys of %s: %s", notary, server, exc)
                missing = {
                    kid: ts
                    for kid, ts in missing.items()
                    if not self._is_valid_in_cache(server, kid, ts)
                }
        if missing:
            until = self._now_ms() + NEGATIVE_CACHE_MS
            for kid in missing:
                self._missing[(server, kid)] = until
            self._prune(self._missing)

    async def _query_notary(
        self, notary: ServerName, server: ServerName, key_ids: Mapping[str, int]
    ) -> None:
        body = {
            "server_keys": {
                server: {kid: {"minimum_valid_until_ts": ts} for kid, ts in key_ids.items()}
            }
        }
        response = await self._call(lambda: self._fetcher.query_server_keys(notary, body))
        entries = response.get("server_keys") if isinstance(response, Mapping) else None
        if not isinstance(entries, list):
            raise InvalidKeyResponse("no server_keys array")
        checked: list[_CheckedResponse] = []
        for entry in entries:
            # Only the server asked about: a notary does not get to vouch for others here.
            if not isinstance(entry, Mapping) or entry.get("server_name") != server:
                continue
            if not await self._signed_by_notary(notary, entry):
                logger.warning("Notary %s's answer for %s is not signed by it", notary, server)
                continue
            try:
                checked.append(_check_key_response(server, entry, self._now_ms()))
            except InvalidKeyResponse as exc:
                logger.warning(
                    "Notary %s relayed a bad key response for %s: %s", notary, server, exc
                )
        await self._remember(checked)

    async def _signed_by_notary(self, notary: ServerName, entry: Mapping[str, Any]) -> bool:
        key_ids = _signature_key_ids(entry, notary)
        if not key_ids:
            return False
        now = self._now_ms()
        # Notaries' own keys come from the notaries themselves: no notary chains, no cycles.
        keys = await self._lookup({notary: dict.fromkeys(key_ids, now)}, use_notaries=False)
        usable = [
            key
            for kid in key_ids
            if (key := keys.get((notary, kid))) is not None and key.valid_until_ts >= now
        ]
        return bool(usable) and all(
            verify_json_signature(entry, notary, key.verify_key) for key in usable
        )

    async def _call(self, request: Callable[[], Awaitable[Any]]) -> Any:
        """One outbound key request: bounded in time and in how many run at once."""
        async with self._fetch_slots, asyncio.timeout(self._fetch_timeout_s):
            return await request()

    async def _remember(self, responses: Sequence[_CheckedResponse]) -> None:
        """Cache and store checked key responses (one transaction)."""
        if not responses:
            return
        now = self._now_ms()
        for response in responses:
            for kid, key in response.keys.items():
                self._cache_put((response.server_name, kid), key)
        try:
            await self._store.store_responses(
                KeyResponse(
                    [
                        ServerKey(
                            response.server_name, kid, key.key_base64, key.valid_until_ts, now
                        )
                        for kid, key in response.keys.items()
                    ],
                    orjson.dumps(response.json).decode(),
                )
                for response in responses
            )
        except Exception:
            # The keys are still cached in memory; the next fetch stores them again.
            logger.exception("Could not store the keys of %s", responses[0].server_name)

    def _cache_key(
        self, pair: tuple[ServerName, str], key_base64: str, valid_until_ts: int
    ) -> _Key | None:
        """Cache a stored key; the better of it and the cached one."""
        try:
            verify_key = decode_verify_key(pair[1], key_base64)
        except ValueError:
            return None
        return self._cache_put(pair, _Key(verify_key, key_base64, valid_until_ts))

    def _cache_put(self, pair: tuple[ServerName, str], key: _Key) -> _Key:
        cached = self._cache.get(pair)
        if cached is not None and cached.valid_until_ts > key.valid_until_ts:
            return cached
        self._cache.pop(pair, None)
        self._cache[pair] = key
        while len(self._cache) > CACHE_SIZE:
            del self._cache[next(iter(self._cache))]
        return key

    def _prune(self, negative: dict[Any, int]) -> None:
        if len(negative) > CACHE_SIZE:
            now = self._now_ms()
            for item in [item for item, until in negative.items() if until <= now]:
                del negative[item]


def _check_key_response(
    server_name: ServerName, response: Any, fetched_ts: int
) -> _CheckedResponse:
    """The keys of ``server_name``'s key response, checked ("Publishing Keys").

    Raises ``InvalidKeyResponse`` unless it is about ``server_name``, has an integer
    ``valid_until_ts`` and is signed by ``server_name`` with keys it lists under
    ``verify_keys``, every such signature valid."""
    if not isinstance(response, Mapping):
        raise InvalidKeyResponse("not a JSON object")
    if response.get("server_name") != server_name:
        raise InvalidKeyResponse(f"server_name is {response.get('server_name')!r}")
    valid_until_ts = response.get("valid_until_ts")
    if not _is_int(valid_until_ts):
        raise InvalidKeyResponse("valid_until_ts is not an integer")
    verify_keys = response.get("verify_keys")
    old_verify_keys = response.get("old_verify_keys") or {}
    if not isinstance(verify_keys, Mapping) or not isinstance(old_verify_keys, Mapping):
        raise InvalidKeyResponse("verify_keys or old_verify_keys is not an object")
    cap = fetched_ts + MAX_KEY_VALIDITY_MS

    keys: dict[str, _Key] = {}
    for kid, data in verify_keys.items():
        key = _decode_listed_key(kid, data, min(valid_until_ts, cap))
        if key is not None:
            keys[kid] = key
    signatures = response.get("signatures")
    own_signatures = signatures.get(server_name) if isinstance(signatures, Mapping) else None
    if not isinstance(own_signatures, Mapping):
        raise InvalidKeyResponse("not signed by the server")
    signed_with = [kid for kid in own_signatures if kid in keys]
    if not signed_with:
        raise InvalidKeyResponse("not signed with any key it lists")
    for kid in signed_with:
        if not verify_json_signature(response, server_name, keys[kid].verify_key):
            raise InvalidKeyResponse(f"bad signature by {kid}")

    for kid, data in old_verify_keys.items():
        if kid in keys or not isinstance(data, Mapping) or not _is_int(data.get("expired_ts")):
            continue
        key = _decode_listed_key(kid, data, min(data["expired_ts"], cap))
        if key is not None:
            keys[kid] = key

    stored = dict(response)
    stored["signatures"] = {server_name: dict(own_signatures)}
    return _CheckedResponse(server_name, keys, stored)


def _decode_listed_key(kid: Any, data: Any, valid_until_ts: int) -> _Key | None:
    """A key from ``verify_keys``/``old_verify_keys``; None for other algorithms and
    malformed entries (skipped, as the spec skips unknown algorithms)."""
    if not isinstance(kid, str) or not kid.startswith(_KEY_PREFIX):
        return None
    if not isinstance(data, Mapping) or not isinstance(data.get("key"), str):
        return None
    try:
        verify_key = decode_verify_key(kid, data["key"])
    except ValueError:
        return None
    return _Key(verify_key, data["key"], valid_until_ts)


def _signature_key_ids(obj: Mapping[str, Any], server_name: ServerName) -> list[str]:
    """The ed25519 key IDs ``server_name`` signed ``obj`` with (others are ignored)."""
    signatures = obj.get("signatures")
    by_server = signatures.get(server_name) if isinstance(signatures, Mapping) else None
    if not isinstance(by_server, Mapping):
        return []
    return sorted(kid for kid in by_server if isinstance(kid, str) and kid.startswith(_KEY_PREFIX))


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_stored(stored: Mapping[ServerName, list[str]]) -> dict[ServerName, list[JsonDict]]:
    return {server: [orjson.loads(text) for text in texts] for server, texts in stored.items()}


def _covers(
    responses: Sequence[Mapping[str, Any]], key_ids: Mapping[str, int], default_min: int
) -> bool:
    """Whether stored responses answer a notary query without asking the server again:
    each key ID wanted is listed in one valid until long enough (or among the old keys,
    which no later response will improve); with no key IDs, one response lasts long
    enough."""
    if not key_ids:
        return any(response.get("valid_until_ts", 0) >= default_min for response in responses)
    for kid, min_ts in key_ids.items():
        if not any(
            (kid in response.get("verify_keys", {}) and response.get("valid_until_ts", 0) >= min_ts)
            or kid in response.get("old_verify_keys", {})
            for response in responses
        ):
            return False
    return True
