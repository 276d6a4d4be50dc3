"""End-to-end encryption keys: upload, query and claim, cross-signing.

Client-Server API, "End-to-End Encryption" (keys.yaml, cross_signing.yaml). Every
uploaded key is checked (by the pure rules of ``events/device_keys.py``) before anything
is stored, and one upload is stored in one transaction. Where the spec is silent the
behaviour follows Synapse:

- a device's identity keys cannot be changed once uploaded (only re-uploaded as they
  are); deleting the device deletes its keys;
- a device holds at most ``MAX_ONE_TIME_KEYS_PER_ALGORITHM`` one-time keys per algorithm;
- a signature of another user's master key is visible only to its signer, signatures of
  a user's devices (by their self-signing key) to everyone;
- the first upload of cross-signing keys needs no user-interactive auth (MSC3967).

The one-time key counts and unused fallback key types that /sync reports are cached per
device and invalidated next to every write that changes them.

Federation (Server-Server API, "End-to-End Encryption"): ``remote_keys``, when set, answers
the queries and claims for other servers' users; ``federation_query_keys``,
``federation_claim_keys`` and ``federation_device_list`` answer other servers about local
users; ``device_keys_listeners`` and ``cross_signing_listeners`` hear the changes to send
to the servers sharing a room with the user.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, Final, Protocol

import orjson

from peyvand.errors import Errcode, MatrixError, forbidden, invalid_param
from peyvand.events.canonical_json import encode_canonical_json
from peyvand.events.device_keys import (
    CROSS_SIGNING_FIELDS,
    ED25519,
    MASTER,
    SELF_SIGNING,
    USER_SIGNING,
    CrossSigningKey,
    check_cross_signing_key,
    check_device_keys,
    check_key_map,
    check_key_signature,
    check_signed_by_master,
    device_identity_key,
    other_signature,
    own_signatures,
    same_one_time_key,
    unsigned_part,
)
from peyvand.events.signing import decode_verify_key
from peyvand.keyed_locks import KeyedLocks
from peyvand.lru import LRU
from peyvand.services.accounts.auth import AuthService
from peyvand.services.accounts.requester import Requester
from peyvand.storage.e2e_keys import (
    ClaimKey,
    CrossSigningKeyRow,
    DeviceKeysRow,
    E2eKeyStore,
    NewKey,
    SignatureRow,
)
from peyvand.types import DeviceID, JsonDict, ServerName, UserID, is_valid_user_id, server_name_of


# Called with a user whose device or cross-signing keys (or signatures of them) changed.
class KeysChangedHook(Protocol):
    """``DeviceListService.notify_user_changed``."""

    async def __call__(self, user_id: UserID, *, only_to: UserID | None = None) -> None: ...


# Called with (user, devices) after the identity keys of a local user's devices, or the
# user's own signatures of them, changed.
DeviceKeysListener = Callable[[UserID, Sequence[DeviceID]], Awaitable[None]]
# Called with (user, key types) after a local user's cross-signing keys, or signatures of
# the master key by the user's devices, changed.
CrossSigningListener = Callable[[UserID, Collection[str]], Awaitable[None]]


class RemoteKeys(Protocol):
    """Keys of other servers' users (over federation)."""

    async def query_remote_keys(self, query: Mapping[UserID, Sequence[str]]) -> JsonDict:
        """``{"device_keys", "master_keys", "self_signing_keys", "failures"}`` for the
        remote users of ``query`` (user -> device IDs, none: all)."""
        ...

    async def claim_remote_keys(self, query: Mapping[UserID, Mapping[DeviceID, str]]) -> JsonDict:
        """``{"one_time_keys", "failures"}`` for the remote users of ``query``."""
        ...


@dataclass(frozen=True, slots=True)
class FederationDeviceList:
    """A local user's devices as other servers see them (GET /user/devices)."""

    device_ids: frozenset[DeviceID]
    # Identity keys (with the user's own signatures) of the devices that have any.
    device_keys: dict[DeviceID, JsonDict]
    # "master" / "self_signing" -> the key as uploaded.
    cross_signing: dict[str, JsonDict]


# As Synapse: clients keep about 50 on the server; more could never be used.
MAX_ONE_TIME_KEYS_PER_ALGORITHM: Final = 500
# The one algorithm whose count /sync and /keys/upload always give, 0 included.
SIGNED_CURVE25519: Final = "signed_curve25519"
_CACHE_SIZE = 50_000
_NO_FEDERATION = {"status": 503, "message": "This server does not federate yet"}


def canonical(value: Any) -> str:
    """A key (an object or a bare key string) as canonical JSON text."""
    return encode_canonical_json(value).decode()


def _failure(error: MatrixError) -> JsonDict:
    """A per-key failure of /keys/signatures/upload."""
    return {"status": error.status, "errcode": error.errcode.value, "error": error.message}


def _stored_cross_signing_key(row: CrossSigningKeyRow) -> CrossSigningKey:
    key_id = f"{ED25519}:{row.public_key}"
    return CrossSigningKey(
        row.key_type,
        row.public_key,
        decode_verify_key(key_id, row.public_key),
        orjson.loads(row.key_json),
    )


# The service ---------------------------------------------------------------------------


class E2eKeysService:
    def __init__(
        self,
        server_name: ServerName,
        store: E2eKeyStore,
        auth: AuthService,
        on_keys_changed: KeysChangedHook,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._server_name = server_name
        self._store = store
        self._auth = auth
        self._on_keys_changed = on_keys_changed
        self._clock = clock
        self._counts: LRU[tuple[UserID, DeviceID], dict[str, int]] = LRU(_CACHE_SIZE)
        self._fallback: LRU[tuple[UserID, DeviceID], list[str]] = LRU(_CACHE_SIZE)
        # Bumped on every write the caches depend on: a read racing one is not cached.
        self._version = 0
        # Serialises the uploads of one device (check, then write).
        self._upload_locks = KeyedLocks()
        self.remote_keys: RemoteKeys | None = None
        self.device_keys_listeners: list[DeviceKeysListener] = []
        self.cross_signing_listeners: list[CrossSigningListener] = []
        # Told the devices whose one-time or fallback keys changed (application services).
        self.counts_hooks: list[Callable[[Sequence[tuple[UserID, DeviceID]]], None]] = []

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # Counts for /sync ------------------------------------------------------------------

    async def one_time_key_counts(self, user_id: UserID, device_id: DeviceID) -> dict[str, int]:
        """``device_one_time_keys_count`` of /sync (and ``one_time_key_counts`` of
        /keys/upload): unclaimed one-time keys per algorithm.

        ``signed_curve25519`` is always there, 0 if the device has none, as in Synapse
        (the spec lets a zero count be omitted or not: "Extensions to /sync"), so a client
        that reads a missing count as "unknown" still uploads keys. Cached; do not mutate
        the result.
        """
        key = (user_id, device_id)
        cached = self._counts.get(key)
        if cached is not None:
            return cached
        version = self._version
        counts = {
            SIGNED_CURVE25519: 0,
            **await self._store.count_one_time_keys(user_id, device_id),
        }
        if version == self._version:
            self._counts.put(key, counts)
        return counts

    async def unused_fallback_key_types(self, user_id: UserID, device_id: DeviceID) -> list[str]:
        """``device_unused_fallback_key_types`` of /sync. Cached; do not mutate."""
        key = (user_id, device_id)
        cached = self._fallback.get(key)
        if cached is not None:
            return cached
        version = self._version
        types = await self._store.unused_fallback_key_types(user_id, device_id)
        if version == self._version:
            self._fallback.put(key, types)
        return types

    def counts_changed_elsewhere(self, devices: Sequence[Sequence[str]] | None) -> None:
        """Another process of a deployment changed the one-time or fallback keys of these
        ``(user, device)`` pairs (None: of any): what is kept of them here is dropped,
        without calling ``counts_hooks`` (the other process did: issue 21)."""
        self._version += 1
        if devices is None:
            self._counts.clear()
            self._fallback.clear()
            return
        for user_id, device_id in devices:
            key = (UserID(user_id), DeviceID(device_id))
            self._counts.pop(key)
            self._fallback.pop(key)

    def _invalidate(self, devices: Iterable[tuple[UserID, DeviceID]]) -> None:
        self._version += 1
        changed = list(devices)
        for key in changed:
            self._counts.pop(key)
            self._fallback.pop(key)
        for hook in self.counts_hooks:
            hook(changed)

    # POST /keys/upload -----------------------------------------------------------------

    async def upload_keys(self, requester: Requester, body: Mapping[str, Any]) -> dict[str, int]:
        """Store the device's identity, one-time and fallback keys; the new key counts.

        Everything is checked first; a request with any bad key stores nothing.
        """
        user_id, device_id = requester.user_id, requester.device_id
        device_keys = None
        if body.get("device_keys") is not None:
            device_keys = check_device_keys(body["device_keys"], user_id, device_id)
        one_time_keys = check_key_map(
            body.get("one_time_keys") or {}, "one_time_keys", MAX_ONE_TIME_KEYS_PER_ALGORITHM
        )
        fallback_keys = check_key_map(body.get("fallback_keys") or {}, "fallback_keys", 16)
        if len({algorithm for algorithm, _, _ in fallback_keys}) != len(fallback_keys):
            raise invalid_param("At most one fallback key per algorithm")

        key = (user_id, device_id)
        async with self._upload_locks.hold(key):
            stored_json = await self._store.get_device_keys_json(user_id, device_id)
            new_json = None if device_keys is None else canonical(device_keys)
            if stored_json is not None and new_json is not None and new_json != stored_json:
                stored = orjson.loads(stored_json)
                if unsigned_part(stored) != unsigned_part(device_keys or {}):
                    raise invalid_param(
                        "This device already has other identity keys; log in as a new device"
                    )
            identity_source = device_keys or (orjson.loads(stored_json) if stored_json else None)
            identity = (
                None if identity_source is None else device_identity_key(identity_source, device_id)
            )
            for algorithm, key_id, value in [*one_time_keys, *fallback_keys]:
                check_key_signature(value, f"{algorithm}:{key_id}", user_id, device_id, identity)
            new_one_time = await self._new_one_time_keys(user_id, device_id, one_time_keys)
            changed = new_json is not None and new_json != stored_json
            await self._store.store_keys(
                user_id,
                device_id,
                device_keys_json=new_json if changed else None,
                one_time_keys=new_one_time,
                fallback_keys=[NewKey(a, k, canonical(v)) for a, k, v in fallback_keys],
                now_ms=self._now_ms(),
            )
            self._invalidate([key])
        if changed:
            await self._on_keys_changed(user_id)
            for listener in self.device_keys_listeners:
                await listener(user_id, [device_id])
        return await self.one_time_key_counts(user_id, device_id)

    async def _new_one_time_keys(
        self, user_id: UserID, device_id: DeviceID, keys: Sequence[tuple[str, str, Any]]
    ) -> list[NewKey]:
        """The keys not stored yet; 400 if a key ID is reused for another key, 413 if the
        device would hold too many."""
        if not keys:
            return []
        stored = await self._store.get_one_time_keys(
            user_id, device_id, [(algorithm, key_id) for algorithm, key_id, _ in keys]
        )
        new = []
        for algorithm, key_id, value in keys:
            existing = stored.get((algorithm, key_id))
            if existing is None:
                new.append(NewKey(algorithm, key_id, canonical(value)))
            elif not same_one_time_key(existing, value):
                raise invalid_param(f"One-time key {algorithm}:{key_id} already exists")
        counts = await self._store.count_one_time_keys(user_id, device_id)
        for algorithm, added in Counter(k.algorithm for k in new).items():
            if counts.get(algorithm, 0) + added > MAX_ONE_TIME_KEYS_PER_ALGORITHM:
                raise MatrixError(
                    Errcode.TOO_LARGE,
                    f"A device holds at most {MAX_ONE_TIME_KEYS_PER_ALGORITHM} "
                    f"{algorithm} one-time keys",
                )
        return new

    # POST /keys/query ------------------------------------------------------------------

    async def query_keys(
        self, requester: Requester, query: Mapping[str, Sequence[str]]
    ) -> JsonDict:
        """Device and cross-signing keys of the users queried (keys.yaml, /keys/query)."""
        local: dict[UserID, Sequence[str]] = {}
        remote: dict[UserID, Sequence[str]] = {}
        for user, device_ids in query.items():
            if not is_valid_user_id(user):
                raise invalid_param(f"Not a valid user ID: {user!r}")
            user_id = UserID(user)
            if server_name_of(user_id) == self._server_name:
                local[user_id] = device_ids
            else:
                remote[user_id] = device_ids
        result = await self._local_keys(local, requester.user_id)
        failures: JsonDict = {}
        if remote and self.remote_keys is None:
            failures = {server_name_of(user_id): _NO_FEDERATION for user_id in remote}
        elif remote and self.remote_keys is not None:
            found = await self.remote_keys.query_remote_keys(remote)
            for field_name in ("device_keys", "master_keys", "self_signing_keys"):
                result[field_name].update(found.get(field_name, {}))
            failures = found.get("failures", {})
        result["failures"] = failures
        return result

    async def federation_query_keys(self, query: Mapping[str, Sequence[str]]) -> JsonDict:
        """``POST /_matrix/federation/v1/user/keys/query`` (another server asks): the
        device, master and self-signing keys of the local users queried; others are
        left out."""
        local = {
            UserID(user): device_ids
            for user, device_ids in query.items()
            if is_valid_user_id(user) and server_name_of(user) == self._server_name
        }
        result = await self._local_keys(local, None)
        del result["user_signing_keys"]
        return result

    async def federation_device_list(self, user_id: UserID) -> FederationDeviceList:
        """The local user's devices, their keys and the user's master and self-signing
        keys, as other servers see them (GET /user/devices, m.device_list_update)."""
        devices = frozenset(device.device_id for device in await self._auth.get_devices(user_id))
        keys = await self._local_keys({user_id: []}, None)
        cross_signing = {
            key_type: keys[f"{key_type}_keys"][user_id]
            for key_type in (MASTER, SELF_SIGNING)
            if user_id in keys[f"{key_type}_keys"]
        }
        device_keys = {
            DeviceID(device_id): device_json
            for device_id, device_json in keys["device_keys"].get(user_id, {}).items()
        }
        return FederationDeviceList(devices, device_keys, cross_signing)

    async def _local_keys(
        self, query: Mapping[UserID, Sequence[str]], viewer: UserID | None
    ) -> JsonDict:
        """Keys of local users as ``viewer`` sees them (None: another server)."""
        local = list(query)
        all_devices: list[UserID] = []
        some_devices: list[tuple[UserID, DeviceID]] = []
        for user_id, device_ids in query.items():
            if device_ids:
                some_devices += [(user_id, DeviceID(d)) for d in dict.fromkeys(device_ids)]
            else:
                all_devices.append(user_id)
        device_rows = await self._store.get_device_keys(all_devices, some_devices)
        cross_signing = await self._store.get_cross_signing_keys(local)
        # Signatures by the keys' owners, and by the viewer (who may sign others' keys).
        signatures = await self._store.get_signatures(local, viewer or UserID(""))

        device_keys: dict[str, dict[str, JsonDict]] = {user_id: {} for user_id in local}
        for row in device_rows:
            device_keys[row.user_id][row.device_id] = _device_json(row, viewer is not None)
        result: JsonDict = {"device_keys": device_keys}
        by_public_key: dict[tuple[UserID, str], JsonDict] = {}
        for key in cross_signing:
            if key.key_type == USER_SIGNING and key.user_id != viewer:
                continue
            key_json = orjson.loads(key.key_json)
            result.setdefault(f"{key.key_type}_keys", {})[key.user_id] = key_json
            if key.key_type == MASTER:
                by_public_key[(key.user_id, key.public_key)] = key_json
        for sig in signatures:
            target = device_keys[sig.target_user_id].get(sig.target_device_id)
            if target is not None and sig.user_id == sig.target_user_id:
                target.setdefault("signatures", {}).setdefault(sig.user_id, {})[sig.key_id] = (
                    sig.signature
                )
            master = by_public_key.get((sig.target_user_id, sig.target_device_id))
            if master is not None and sig.user_id == viewer:
                master.setdefault("signatures", {}).setdefault(sig.user_id, {})[sig.key_id] = (
                    sig.signature
                )
        for key_type in (MASTER, SELF_SIGNING, USER_SIGNING):
            result.setdefault(f"{key_type}_keys", {})
        return result

    # POST /keys/claim ------------------------------------------------------------------

    async def claim_keys(self, query: Mapping[str, Mapping[str, str]]) -> JsonDict:
        """One key per (user, device, algorithm): a one-time key, else the fallback key."""
        local: dict[UserID, Mapping[DeviceID, str]] = {}
        remote: dict[UserID, Mapping[DeviceID, str]] = {}
        for user, devices in query.items():
            if not is_valid_user_id(user):
                raise invalid_param(f"Not a valid user ID: {user!r}")
            target = local if server_name_of(user) == self._server_name else remote
            target[UserID(user)] = {DeviceID(d): algorithm for d, algorithm in devices.items()}
        one_time_keys = await self._claim_local(local)
        failures: JsonDict = {}
        if remote and self.remote_keys is None:
            failures = {server_name_of(user_id): _NO_FEDERATION for user_id in remote}
        elif remote and self.remote_keys is not None:
            found = await self.remote_keys.claim_remote_keys(remote)
            one_time_keys.update(found.get("one_time_keys", {}))
            failures = found.get("failures", {})
        return {"one_time_keys": one_time_keys, "failures": failures}

    async def federation_claim_keys(self, query: Mapping[str, Mapping[str, str]]) -> JsonDict:
        """``POST /_matrix/federation/v1/user/keys/claim`` (another server asks): claims
        for local users; others are left out."""
        local = {
            UserID(user): {DeviceID(d): algorithm for d, algorithm in devices.items()}
            for user, devices in query.items()
            if is_valid_user_id(user) and server_name_of(user) == self._server_name
        }
        return {"one_time_keys": await self._claim_local(local)}

    async def _claim_local(
        self, query: Mapping[UserID, Mapping[DeviceID, str]]
    ) -> dict[str, dict[str, JsonDict]]:
        claims: list[ClaimKey] = [
            (user_id, device_id, algorithm)
            for user_id, devices in query.items()
            for device_id, algorithm in devices.items()
        ]
        claimed = await self._store.claim_keys(claims)
        self._invalidate((user_id, device_id) for user_id, device_id, _ in claimed)
        one_time_keys: dict[str, dict[str, JsonDict]] = {}
        for (user_id, device_id, algorithm), key in claimed.items():
            one_time_keys.setdefault(user_id, {}).setdefault(device_id, {})[
                f"{algorithm}:{key.key_id}"
            ] = orjson.loads(key.key_json)
        return one_time_keys

    # Deleted devices -------------------------------------------------------------------

    async def on_devices_deleted(self, user_id: UserID, device_ids: Sequence[str]) -> None:
        """``AuthService.on_devices_deleted`` hook: forget the keys of the user's deleted
        devices and the signatures of them or by them."""
        await self._store.delete_keys_of_deleted_devices(user_id)
        self._invalidate((user_id, DeviceID(device_id)) for device_id in device_ids)

    # POST /keys/device_signing/upload --------------------------------------------------

    async def upload_cross_signing_keys(
        self, requester: Requester, body: Mapping[str, Any]
    ) -> None:
        """Store the user's master, self-signing and user-signing keys.

        UIA with the password unless nothing would be replaced: no master key exists yet
        (MSC3967) or every key sent is already stored as it is (cross_signing.yaml).
        """
        user_id = requester.user_id
        uploaded = [
            check_cross_signing_key(body[field_name], user_id, key_type)
            for key_type, field_name in CROSS_SIGNING_FIELDS.items()
            if body.get(field_name) is not None
        ]
        stored = {row.key_type: row for row in await self._store.get_cross_signing_keys([user_id])}
        changed = [
            key
            for key in uploaded
            if key.key_type not in stored or orjson.loads(stored[key.key_type].key_json) != key.json
        ]
        if MASTER in stored and changed:
            auth = body.get("auth")
            await self._auth.require_password(
                requester,
                auth if isinstance(auth, dict) else None,
                "POST /keys/device_signing/upload",
            )
        by_type = {key.key_type: key for key in uploaded}
        master = by_type.get(MASTER) or (
            _stored_cross_signing_key(stored[MASTER]) if MASTER in stored else None
        )
        if master is None:
            raise MatrixError(Errcode.MISSING_PARAM, "No master key available")
        check_signed_by_master(uploaded, user_id, master)
        if not changed:
            return
        device_ids = {device.device_id for device in await self._auth.get_devices(user_id)}
        if any(key.public_key in device_ids for key in changed):
            raise forbidden("Key ID in use")
        await self._store.set_cross_signing_keys(
            user_id,
            [
                CrossSigningKeyRow(user_id, key.key_type, key.public_key, canonical(key.json))
                for key in changed
            ],
            self._now_ms(),
        )
        # A user-signing key is the user's own business: others are not told (as Synapse).
        own_only = all(key.key_type == USER_SIGNING for key in changed)
        await self._on_keys_changed(user_id, only_to=user_id if own_only else None)
        for listener in self.cross_signing_listeners:
            await listener(user_id, {key.key_type for key in changed})

    # POST /keys/signatures/upload ------------------------------------------------------

    async def upload_signatures(self, requester: Requester, body: Mapping[str, Any]) -> JsonDict:
        """Store the signatures that verify; report the others under ``failures``.

        Accepted: the requester's devices signed by their self-signing key, their master
        key signed by one of their devices, and other local users' master keys signed by
        the requester's user-signing key.
        """
        user_id = requester.user_id
        for target, objects in body.items():
            if not isinstance(objects, dict) or not all(
                isinstance(o, dict) for o in objects.values()
            ):
                raise invalid_param("Signatures must map users to key IDs to signed objects")
            if not is_valid_user_id(target):
                raise invalid_param(f"Not a valid user ID: {target!r}")
        users = [UserID(u) for u in body if server_name_of(u) == self._server_name]
        keys = {
            (row.user_id, row.key_type): _stored_cross_signing_key(row)
            for row in await self._store.get_cross_signing_keys([user_id, *users])
        }
        own_devices: dict[str, JsonDict] = {}
        if user_id in body:
            own_devices = {
                row.device_id: orjson.loads(row.key_json)
                for row in await self._store.get_device_keys([user_id], [])
            }
        accepted: list[SignatureRow] = []
        failures: dict[str, dict[str, JsonDict]] = {}
        for target, objects in body.items():
            for key_id, signed in objects.items():
                try:
                    if target == user_id:
                        found = own_signatures(user_id, key_id, signed, keys, own_devices)
                    else:
                        found = other_signature(user_id, UserID(target), key_id, signed, keys)
                except MatrixError as error:
                    failures.setdefault(target, {})[key_id] = _failure(error)
                    continue
                accepted += [
                    SignatureRow(UserID(target), key_id, user_id, signer_key_id, signature)
                    for signer_key_id, signature in found.items()
                ]
        await self._store.store_signatures(accepted)
        # The signer's devices learn of the other users' keys they signed (only they).
        for target in dict.fromkeys(s.target_user_id for s in accepted):
            if target != user_id:
                await self._on_keys_changed(target, only_to=user_id)
        own = [sig.target_device_id for sig in accepted if sig.target_user_id == user_id]
        if own:
            await self._on_keys_changed(user_id)
            master = keys.get((user_id, MASTER))
            devices = [DeviceID(t) for t in dict.fromkeys(own) if t in own_devices]
            if devices:
                for device_listener in self.device_keys_listeners:
                    await device_listener(user_id, devices)
            if master is not None and master.public_key in own:
                for listener in self.cross_signing_listeners:
                    await listener(user_id, {MASTER})
        return {"failures": failures}


def _device_json(row: DeviceKeysRow, with_display_name: bool = True) -> JsonDict:
    """A device's keys; other servers are not told display names (as Synapse, by default)."""
    keys: JsonDict = orjson.loads(row.key_json)
    if with_display_name:
        keys["unsigned"] = (
            {} if row.display_name is None else {"device_display_name": row.display_name}
        )
    return keys
