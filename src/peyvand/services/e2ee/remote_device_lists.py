"""Other servers' users' devices and cross-signing keys (Server-Server API, "Device
Management" and "End-to-End Encryption"), cached in ``RemoteDeviceStore``.

- ``m.device_list_update``: the cache of the remote user's devices follows the sender's
  per-user ``stream_id`` / ``prev_id`` chain. An update whose ``prev_id``s are all known is
  applied; a gap (or a user never fetched) marks the cache stale, to be fetched again
  with ``GET /user/devices`` (``resync_user``), in the background or when a local user
  asks for the keys. Either way ``DeviceListService`` records the change, so local users
  sharing a room see the user in ``device_lists.changed``. Only users who share a room
  with a local user are tracked.
- ``m.signing_key_update``: the cached master and self-signing keys, likewise.

As ``E2eKeysService.remote_keys`` it answers ``/keys/query`` and ``/keys/claim`` for
remote users, from the cache or from their servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import orjson

from peyvand.background import BackgroundTask
from peyvand.errors import MatrixError
from peyvand.events.device_keys import (
    MASTER,
    MAX_DEVICE_KEYS_BYTES,
    SELF_SIGNING,
    check_cross_signing_key,
)
from peyvand.lru import LRU
from peyvand.services.e2ee.device_lists import DeviceListService
from peyvand.services.e2ee.keys import E2eKeysService, canonical
from peyvand.services.federation.edu_support import (
    MAX_ID_LENGTH,
    IgnoredEdu,
    edu_position,
    edu_string,
    edu_user_of,
)
from peyvand.services.federation.room_sharing import RoomSharing
from peyvand.storage.remote_devices import RemoteDevice, RemoteDeviceList, RemoteDeviceStore
from peyvand.types import DeviceID, JsonDict, ServerName, UserID, server_name_of

logger = logging.getLogger(__name__)

# A timeout on every request this module makes of another server.
REMOTE_TIMEOUT_S: Final = 10.0
# How often stale device lists are fetched again when nothing asks sooner.
RESYNC_INTERVAL_S: Final = 300.0
_RESYNC_BATCH: Final = 100
_RESYNC_CONCURRENCY: Final = 8
# Recently applied stream_ids kept per remote user (a prev_id may name any of them).
_SEEN_PER_USER: Final = 32
_CACHE_SIZE: Final = 10_000
CROSS_SIGNING_FIELDS: Final = {MASTER: "master_key", SELF_SIGNING: "self_signing_key"}
_UNREACHABLE: Final = {"status": 503, "message": "Failed to reach the user's server"}

# GET /_matrix/federation/v1/user/devices/{userId} at (server, user): the JSON answer.
UserDevicesFetcher = Callable[[ServerName, UserID], Awaitable[Any]]
# POST /_matrix/federation/v1/user/keys/claim at (server, body): the JSON answer.
KeysClaimer = Callable[[ServerName, JsonDict], Awaitable[Any]]


def _device_keys(value: object, user_id: UserID, device_id: str) -> str | None:
    """The DeviceKeys of a remote device as canonical JSON (None if absent); they must
    name the user and device they are sent for."""
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or value.get("user_id") != user_id
        or value.get("device_id") != device_id
        or not isinstance(value.get("keys"), dict)
    ):
        raise IgnoredEdu(f"keys of {user_id} {device_id} are not that device's DeviceKeys")
    keys = canonical(value)
    if len(keys) > MAX_DEVICE_KEYS_BYTES:
        raise IgnoredEdu(f"keys of {user_id} {device_id} are too large")
    return keys


def _cross_signing_keys(content: Mapping[str, Any], user_id: UserID) -> dict[str, str]:
    """The master and self-signing keys in ``content`` (key type -> canonical JSON)."""
    keys: dict[str, str] = {}
    for key_type, field_name in CROSS_SIGNING_FIELDS.items():
        value = content.get(field_name)
        if value is None:
            continue
        try:
            keys[key_type] = canonical(check_cross_signing_key(value, user_id, key_type).json)
        except MatrixError as exc:
            raise IgnoredEdu(f"{field_name}: {exc.message}") from None
    return keys


def parse_user_devices(user_id: UserID, body: object) -> RemoteDeviceList | None:
    """An answer of ``GET /user/devices/{userId}`` as a fresh cache entry; None if it is
    not a well-formed answer about ``user_id``. Malformed devices are left out."""
    if not isinstance(body, dict) or body.get("user_id") != user_id:
        return None
    devices = body.get("devices")
    try:
        stream_id = edu_position(body.get("stream_id"), "stream_id")
        cross_signing = _cross_signing_keys(body, user_id)
    except IgnoredEdu:
        return None
    if not isinstance(devices, list):
        return None
    found: dict[str, RemoteDevice] = {}
    for device in devices:
        try:
            if not isinstance(device, dict):
                raise IgnoredEdu("a device must be an object")
            device_id = edu_string(device.get("device_id"), "device_id")
            name = device.get("device_display_name")
            if not isinstance(name, str) or len(name) > MAX_ID_LENGTH:
                name = None
            keys = _device_keys(device.get("keys"), user_id, device_id)
            found[device_id] = RemoteDevice(device_id, name, keys)
        except IgnoredEdu as reason:
            logger.info("device of %s left out of its device list: %s", user_id, reason)
    return RemoteDeviceList(
        user_id,
        stream_id,
        False,
        tuple(found[d] for d in sorted(found)),
        tuple(sorted(cross_signing.items())),
    )


class RemoteDeviceLists:
    def __init__(
        self,
        sharing: RoomSharing,
        device_lists: DeviceListService,
        e2e_keys: E2eKeysService,
        store: RemoteDeviceStore,
        *,
        fetch_user_devices: UserDevicesFetcher | None = None,
        claim_keys: KeysClaimer | None = None,
    ) -> None:
        """Becomes ``e2e_keys``' source of remote users' keys."""
        self._sharing = sharing
        self._device_lists = device_lists
        self._store = store
        self._fetch_user_devices = fetch_user_devices
        self._claim_keys = claim_keys
        # Remote device lists (None: not cached), invalidated next to every write.
        self._lists: LRU[UserID, tuple[RemoteDeviceList | None]] = LRU(_CACHE_SIZE)
        self._lists_version = 0
        # Told each user whose device list a write here changed: the other processes of
        # a deployment drop their copies (``changed_elsewhere``; issue 21).
        self.changed_hooks: list[Callable[[UserID], None]] = []
        self._seen: LRU[UserID, tuple[int, ...]] = LRU(_CACHE_SIZE)
        # Serialises writes to the remote caches.
        self._lock = asyncio.Lock()
        self._resync_wanted = asyncio.Event()
        self._resync = (
            BackgroundTask(
                "device-list-resync", functools.partial(self._resync_forever, fetch_user_devices)
            )
            if fetch_user_devices is not None
            else None
        )
        e2e_keys.remote_keys = self

    async def start(self) -> None:
        """Start fetching stale device lists in the background (with a fetcher)."""
        if self._resync is not None:
            self._resync_wanted.set()
            self._resync.start()

    async def stop(self) -> None:
        if self._resync is not None:
            await self._resync.stop()

    # -- inbound EDUs --------------------------------------------------------------------

    async def on_device_list_update(self, origin: ServerName, content: JsonDict) -> None:
        """Server-Server API, "Device Management"."""
        user_id = edu_user_of(origin, content.get("user_id"), "user_id")
        device_id = edu_string(content.get("device_id"), "device_id")
        stream_id = edu_position(content.get("stream_id"), "stream_id")
        prev_ids = content.get("prev_id", [])
        if prev_ids is None:
            prev_ids = []
        if not isinstance(prev_ids, list):
            raise IgnoredEdu("prev_id must be a list")
        prev_ids = [edu_position(p, "prev_id") for p in prev_ids]
        deleted = content.get("deleted", False)
        name = content.get("device_display_name")
        if not isinstance(deleted, bool):
            raise IgnoredEdu("deleted must be a boolean")
        if name is not None and (not isinstance(name, str) or len(name) > MAX_ID_LENGTH):
            raise IgnoredEdu(f"device_display_name must be a string of at most {MAX_ID_LENGTH}")
        keys = None if deleted else _device_keys(content.get("keys"), user_id, device_id)
        if not await self._sharing.shares_room_with_local_user(user_id):
            raise IgnoredEdu(f"no local user shares a room with {user_id}")
        device = RemoteDevice(device_id, name, keys)
        async with self._lock:
            cached = await self._device_list(user_id)
            seen = self._seen.get(user_id) or ()
            if stream_id in seen or (
                cached is not None
                and not cached.stale
                and cached.stream_id is not None
                and stream_id <= cached.stream_id
            ):
                return  # already applied
            if (
                cached is None
                or cached.stale
                or not prev_ids
                or any(p != cached.stream_id and p not in seen for p in prev_ids)
            ):
                logger.info("device list of %s missed updates (at %s): stale", user_id, stream_id)
                await self._store.mark_stale(user_id)
                self._resync_wanted.set()
            else:
                await self._store.apply_update(user_id, stream_id, device, deleted=deleted)
                self._seen.put(user_id, (*seen, stream_id)[-_SEEN_PER_USER:])
            self._invalidate(user_id)
        await self._device_lists.notify_user_changed(user_id)

    async def on_signing_key_update(self, origin: ServerName, content: JsonDict) -> None:
        """Server-Server API, "End-to-End Encryption"."""
        user_id = edu_user_of(origin, content.get("user_id"), "user_id")
        keys = _cross_signing_keys(content, user_id)
        if not keys:
            raise IgnoredEdu("neither master_key nor self_signing_key")
        if not await self._sharing.shares_room_with_local_user(user_id):
            raise IgnoredEdu(f"no local user shares a room with {user_id}")
        async with self._lock:
            await self._store.set_cross_signing_keys(user_id, keys)
            self._invalidate(user_id)
        await self._device_lists.notify_user_changed(user_id)

    # -- the cache -----------------------------------------------------------------------

    def _invalidate(self, user_id: UserID) -> None:
        self._lists_version += 1
        self._lists.pop(user_id)
        for hook in self.changed_hooks:
            try:
                hook(user_id)
            except Exception:
                logger.exception("a device list hook failed for %s", user_id)

    def changed_elsewhere(self, users: Sequence[str] | None) -> None:
        """Another process of a deployment wrote the device lists of ``users`` (None: of
        any user): the copies kept here are dropped, without calling ``changed_hooks``."""
        self._lists_version += 1
        if users is None:
            self._lists.clear()
            return
        for user_id in users:
            self._lists.pop(UserID(user_id))

    async def _device_list(self, user_id: UserID) -> RemoteDeviceList | None:
        cached = self._lists.get(user_id)
        if cached is not None:
            return cached[0]
        version = self._lists_version
        loaded = await self._store.get_device_list(user_id)
        if version == self._lists_version:
            self._lists.put(user_id, (loaded,))
        return loaded

    async def _fetch(self, user_id: UserID, fetch: UserDevicesFetcher) -> RemoteDeviceList | None:
        try:
            async with asyncio.timeout(REMOTE_TIMEOUT_S):
                body = await fetch(server_name_of(user_id), user_id)
        except Exception as exc:
            logger.info("fetching the device list of %s failed: %r", user_id, exc)
            return None
        fetched = parse_user_devices(user_id, body)
        if fetched is None:
            logger.info("the device list of %s fetched from its server is malformed", user_id)
        return fetched

    async def resync_user(self, user_id: UserID, fetch: UserDevicesFetcher) -> bool:
        """Fetch ``user_id``'s device list from their server (``fetch``: GET
        /_matrix/federation/v1/user/devices/{userId}) and store it in place of the cache,
        no longer stale; local users hear of the change. Whether it was stored (not when
        the fetch failed or its answer was malformed: the cache stays as it was)."""
        fetched = await self._fetch(user_id, fetch)
        if fetched is None or fetched.stream_id is None:
            return False
        async with self._lock:
            await self._store.replace_device_list(
                user_id, fetched.stream_id, fetched.devices, dict(fetched.cross_signing)
            )
            self._seen.put(user_id, (fetched.stream_id,))
            self._invalidate(user_id)
        await self._device_lists.notify_user_changed(user_id)
        return True

    async def resync_stale(self, fetch: UserDevicesFetcher) -> int:
        """Fetch again (a batch of) the stale device lists of users still sharing a room
        with a local user; forget those of the others. How many were stored."""
        users = await self._store.get_stale_users(_RESYNC_BATCH)
        limit = asyncio.Semaphore(_RESYNC_CONCURRENCY)

        async def resync(user_id: UserID) -> bool:
            async with limit:
                if await self._sharing.shares_room_with_local_user(user_id):
                    return await self.resync_user(user_id, fetch)
                async with self._lock:
                    await self._store.forget_device_list(user_id)
                    self._invalidate(user_id)
                return False

        done = await asyncio.gather(*(resync(user_id) for user_id in users))
        if len(users) == _RESYNC_BATCH and any(done):
            self._resync_wanted.set()
        return sum(done)

    async def _resync_forever(self, fetch: UserDevicesFetcher) -> None:
        """A pass when an update found a gap, and every ``RESYNC_INTERVAL_S`` anyway."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESYNC_INTERVAL_S):
                    await self._resync_wanted.wait()
            self._resync_wanted.clear()
            try:
                await self.resync_stale(fetch)
            except Exception:
                logger.exception("fetching stale device lists failed; retrying later")

    # -- E2eKeysService.remote_keys ------------------------------------------------------

    async def _device_list_for_query(self, user_id: UserID) -> RemoteDeviceList | None:
        """The user's device list: the cache if current, else fetched (and stored if the
        user is tracked); a stale cache if fetching fails; None if nothing is known."""
        cached = await self._device_list(user_id)
        if cached is not None and not cached.stale:
            return cached
        fetch = self._fetch_user_devices
        if fetch is not None:
            if not await self._sharing.shares_room_with_local_user(user_id):
                return await self._fetch(user_id, fetch)
            if await self.resync_user(user_id, fetch):
                return await self._device_list(user_id)
        return cached if cached is not None and cached.stream_id is not None else None

    async def query_remote_keys(self, query: Mapping[UserID, Sequence[str]]) -> JsonDict:
        """``E2eKeysService.remote_keys``: the device, master and self-signing keys of
        remote users (``/keys/query`` for other servers' users)."""
        users = list(query)
        lists = await asyncio.gather(*(self._device_list_for_query(u) for u in users))
        result: JsonDict = {
            "device_keys": {},
            "master_keys": {},
            "self_signing_keys": {},
            "failures": {},
        }
        for user_id, found in zip(users, lists, strict=True):
            if found is None:
                result["failures"][server_name_of(user_id)] = _UNREACHABLE
                continue
            wanted = set(query[user_id])
            devices: JsonDict = {}
            for device in found.devices:
                if device.keys_json is not None and (not wanted or device.device_id in wanted):
                    keys = orjson.loads(device.keys_json)
                    name = {"device_display_name": device.display_name}
                    keys["unsigned"] = name if device.display_name is not None else {}
                    devices[device.device_id] = keys
            result["device_keys"][user_id] = devices
            for key_type, key_json in found.cross_signing:
                result[f"{key_type}_keys"][user_id] = orjson.loads(key_json)
        return result

    async def claim_remote_keys(self, query: Mapping[UserID, Mapping[DeviceID, str]]) -> JsonDict:
        """``E2eKeysService.remote_keys``: one-time keys of remote users' devices, claimed
        from each user's server (``POST /user/keys/claim``)."""
        by_server: dict[ServerName, dict[str, dict[str, str]]] = {}
        for user_id, devices in query.items():
            by_server.setdefault(server_name_of(user_id), {})[user_id] = {
                str(d): algorithm for d, algorithm in devices.items()
            }
        servers = list(by_server)
        answers = await asyncio.gather(*(self._claim_at(s, by_server[s]) for s in servers))
        result: JsonDict = {"one_time_keys": {}, "failures": {}}
        for server, answer in zip(servers, answers, strict=True):
            if answer is None:
                result["failures"][server] = _UNREACHABLE
            else:
                result["one_time_keys"].update(answer)
        return result

    async def _claim_at(
        self, server: ServerName, query: Mapping[str, Mapping[str, str]]
    ) -> dict[str, JsonDict] | None:
        if self._claim_keys is None:
            return None
        try:
            async with asyncio.timeout(REMOTE_TIMEOUT_S):
                body = await self._claim_keys(server, {"one_time_keys": query})
        except Exception as exc:
            logger.info("claiming keys at %s failed: %r", server, exc)
            return None
        keys = body.get("one_time_keys") if isinstance(body, dict) else None
        if not isinstance(keys, dict):
            return None
        return {
            user: by_device
            for user, by_device in keys.items()
            if user in query
            and isinstance(by_device, dict)
            and all(d in query[user] and isinstance(k, dict) for d, k in by_device.items())
        }
