"""Device-key and cross-signing key rules, as pure functions.

Client-Server API, "End-to-End Encryption": "Uploading keys" (keys.yaml: the DeviceKeys
object, one-time and fallback keys) and "Cross-signing" (cross_signing.yaml: the
master, self-signing and user-signing keys and the signatures of them). Each check
raises the ``MatrixError`` a client is answered with; nothing here reads or stores keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from peyvand.errors import Errcode, MatrixError, invalid_param
from peyvand.events.canonical_json import encode_canonical_json
from peyvand.events.signing import VerifyKey, decode_verify_key, verify_json_signature
from peyvand.types import DeviceID, JsonDict, UserID

ED25519: Final = "ed25519"
MASTER: Final = "master"
SELF_SIGNING: Final = "self_signing"
USER_SIGNING: Final = "user_signing"
# Request field of each cross-signing key type (cross_signing.yaml).
CROSS_SIGNING_FIELDS: Final = {
    MASTER: "master_key",
    SELF_SIGNING: "self_signing_key",
    USER_SIGNING: "user_signing_key",
}

# Size limits (canonical JSON bytes) well above what any client sends.
MAX_DEVICE_KEYS_BYTES: Final = 16 * 1024
MAX_KEY_OBJECT_BYTES: Final = 4 * 1024
MAX_CROSS_SIGNING_KEY_BYTES: Final = 16 * 1024
MAX_IDENTIFIER_LENGTH: Final = 255


def _too_large(message: str) -> MatrixError:
    return MatrixError(Errcode.TOO_LARGE, message)


def _invalid_signature(message: str) -> MatrixError:
    return MatrixError(Errcode.INVALID_SIGNATURE, message)


def unsigned_part(obj: Mapping[str, Any]) -> JsonDict:
    """``obj`` without ``signatures`` and ``unsigned``: what signatures cover."""
    return {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}


def _check_identifier(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise MatrixError(Errcode.BAD_JSON, f"{what} must be a non-empty string")
    if len(value) > MAX_IDENTIFIER_LENGTH:
        raise _too_large(f"{what} is too long")
    return value


def _check_signatures_shape(value: object, what: str) -> Mapping[str, Mapping[str, str]]:
    """``signatures``: user ID -> key ID -> signature, all strings."""
    if not isinstance(value, dict) or not all(
        isinstance(sigs, dict) and all(isinstance(s, str) for s in sigs.values())
        for sigs in value.values()
    ):
        raise MatrixError(Errcode.BAD_JSON, f"{what}: 'signatures' must map users to strings")
    return value


def _ed25519_key(key_id: str, key_base64: object) -> VerifyKey:
    """The ed25519 verify key ``key_id`` (``ed25519:<version>``) with the given value."""
    if not isinstance(key_base64, str):
        raise invalid_param(f"Key {key_id} must be a string")
    try:
        return decode_verify_key(key_id, key_base64)
    except ValueError:
        raise invalid_param(f"Malformed ed25519 key {key_id}") from None


# Uploading keys ------------------------------------------------------------------------


def check_device_keys(device_keys: object, user_id: UserID, device_id: DeviceID) -> JsonDict:
    """The DeviceKeys object of /keys/upload, checked and without ``unsigned``.

    It must describe the requester's own device and have the spec's shape. Its keys and
    signatures are taken as Synapse takes them, unverified: clients verify a device's
    self-signature (and cross-signatures) before they trust its keys
    (end_to_end_encryption.md, "Device keys"), and whoever holds the device's access
    token could sign any keys anyway. Key names "should" be ``<algorithm>:<device_id>``.
    """
    if not isinstance(device_keys, dict):
        raise MatrixError(Errcode.BAD_JSON, "'device_keys' must be an object")
    keys = unsigned_part(device_keys)
    if len(encode_canonical_json(keys)) > MAX_DEVICE_KEYS_BYTES:
        raise _too_large("'device_keys' is too large")
    if keys.get("user_id") != user_id:
        raise invalid_param("'device_keys.user_id' must be the user uploading the keys")
    if keys.get("device_id") != device_id:
        raise invalid_param("'device_keys.device_id' must be the device uploading the keys")
    algorithms = keys.get("algorithms")
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        raise MatrixError(Errcode.BAD_JSON, "'device_keys.algorithms' must be strings")
    public = keys.get("keys")
    if not isinstance(public, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in public.items()
    ):
        raise MatrixError(Errcode.BAD_JSON, "'device_keys.keys' must map key IDs to strings")
    signatures = _check_signatures_shape(device_keys.get("signatures"), "device_keys")
    return {**keys, "signatures": signatures}


def device_identity_key(device_keys: Mapping[str, Any], device_id: DeviceID) -> VerifyKey | None:
    """The device's ed25519 key (``ed25519:<device_id>`` of checked DeviceKeys), or None
    if it has none or it is no ed25519 key at all."""
    signing_key_id = f"{ED25519}:{device_id}"
    identity_key = device_keys["keys"].get(signing_key_id)
    if not isinstance(identity_key, str):
        return None
    try:
        return decode_verify_key(signing_key_id, identity_key)
    except ValueError:
        return None


def check_key_map(value: object, what: str, max_keys: int) -> list[tuple[str, str, Any]]:
    """One-time or fallback keys: ``<algorithm>:<key_id>`` -> key string or key object."""
    if not isinstance(value, dict):
        raise MatrixError(Errcode.BAD_JSON, f"'{what}' must be an object")
    if len(value) > max_keys:
        raise _too_large(f"Too many {what} (at most {max_keys} per upload)")
    checked = []
    for name, key in value.items():
        algorithm, sep, key_id = name.partition(":")
        if not sep or not algorithm or not key_id or ":" in key_id:
            raise MatrixError(
                Errcode.BAD_JSON, f"'{what}' names must be '<algorithm>:<key_id>', not {name!r}"
            )
        _check_identifier(name, f"{what} key name")
        if isinstance(key, dict):
            if not isinstance(key.get("key"), str):
                raise MatrixError(Errcode.BAD_JSON, f"{what} {name}: 'key' must be a string")
            _check_signatures_shape(key.get("signatures", {}), f"{what} {name}")
            key = {k: v for k, v in key.items() if k != "unsigned"}
        elif not isinstance(key, str):
            raise MatrixError(Errcode.BAD_JSON, f"{what} {name} must be a string or an object")
        if len(encode_canonical_json(key)) > MAX_KEY_OBJECT_BYTES:
            raise _too_large(f"{what} {name} is too large")
        checked.append((algorithm, key_id, key))
    return checked


def check_key_signature(
    key: Any, name: str, user_id: UserID, device_id: DeviceID, identity: VerifyKey | None
) -> None:
    """A signed one-time or fallback key must be signed by its device's ed25519 key."""
    if identity is None or not isinstance(key, dict):
        return
    if not verify_json_signature(key, user_id, identity):
        raise _invalid_signature(f"Key {name} is not signed by device {device_id}")


def same_one_time_key(stored_json: str, key: Any) -> bool:
    """Re-uploads may carry other signatures; the key itself must be the same."""
    stored = orjson.loads(stored_json)
    if isinstance(stored, dict) and isinstance(key, dict):
        return unsigned_part(stored) == unsigned_part(key)
    return bool(stored == key)


# Cross-signing -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CrossSigningKey:
    key_type: str
    public_key: str
    verify_key: VerifyKey
    json: JsonDict


def check_cross_signing_key(value: object, user_id: UserID, key_type: str) -> CrossSigningKey:
    """A CrossSigningKey (cross_signing_key.yaml): the user's, for ``key_type``, exactly
    one ed25519 public key."""
    what = CROSS_SIGNING_FIELDS[key_type]
    if not isinstance(value, dict):
        raise MatrixError(Errcode.BAD_JSON, f"'{what}' must be an object")
    if len(encode_canonical_json(value)) > MAX_CROSS_SIGNING_KEY_BYTES:
        raise _too_large(f"'{what}' is too large")
    usage = value.get("usage")
    keys = value.get("keys")
    if value.get("user_id") != user_id:
        raise invalid_param(f"'{what}.user_id' must be the user uploading it")
    if not isinstance(usage, list) or key_type not in usage:
        raise invalid_param(f"'{what}.usage' must include {key_type}")
    if not isinstance(keys, dict) or len(keys) != 1:
        raise invalid_param(f"'{what}.keys' must hold exactly one key")
    ((key_id, public_key),) = keys.items()
    if key_id != f"{ED25519}:{public_key}":
        raise invalid_param(f"'{what}.keys' must be 'ed25519:<public key>': <public key>")
    verify_key = _ed25519_key(key_id, public_key)
    if "signatures" in value:
        _check_signatures_shape(value["signatures"], what)
    json = {k: v for k, v in value.items() if k != "unsigned"}
    return CrossSigningKey(key_type, public_key, verify_key, json)


def check_signed_by_master(
    uploaded: Iterable[CrossSigningKey], user_id: UserID, master: CrossSigningKey
) -> None:
    """The self-signing and user-signing keys must be signed by the user's master key."""
    for key in uploaded:
        if key.key_type != MASTER and not verify_json_signature(
            key.json, user_id, master.verify_key
        ):
            raise _invalid_signature(f"The {key.key_type} key is not signed by the master key")


def _new_signatures(
    signer: UserID, signed: Mapping[str, Any], stored: Mapping[str, Any], key_ids: Iterable[str]
) -> Mapping[str, str]:
    """The signatures by ``signer`` with ``key_ids`` in ``signed`` (an uploaded copy of
    ``stored``), which must be the stored object apart from its signatures."""
    if unsigned_part(signed) != unsigned_part(stored):
        raise invalid_param("The signed object does not match the stored key")
    sigs = _check_signatures_shape(signed.get("signatures"), "signed object").get(signer, {})
    found = {k: v for k, v in sigs.items() if k in key_ids}
    if not found:
        raise _invalid_signature("No signature by an acceptable key")
    return found


def _verified(signer: UserID, signed: Mapping[str, Any], verify_key: VerifyKey) -> None:
    if not verify_json_signature(signed, signer, verify_key):
        raise _invalid_signature(f"Invalid signature by {verify_key.alg}:{verify_key.version}")


def own_signatures(
    user_id: UserID,
    target_id: str,
    signed: Mapping[str, Any],
    keys: Mapping[tuple[UserID, str], CrossSigningKey],
    devices: Mapping[str, JsonDict],
) -> dict[str, str]:
    """The verified signatures (key ID -> signature) of the user's own master key (by
    their devices) or of one of their devices (by their self-signing key)."""
    master = keys.get((user_id, MASTER))
    if master is not None and target_id == master.public_key:
        device_key_ids = {
            f"{ED25519}:{d}" for d, device in devices.items() if f"{ED25519}:{d}" in device["keys"]
        }
        verified = {}
        for key_id, signature in _new_signatures(
            user_id, signed, master.json, device_key_ids
        ).items():
            device = devices[key_id.partition(":")[2]]
            _verified(user_id, signed, _ed25519_key(key_id, device["keys"][key_id]))
            verified[key_id] = signature
        return verified
    self_signing = keys.get((user_id, SELF_SIGNING))
    if self_signing is None:
        raise MatrixError(Errcode.NOT_FOUND, "No self-signing key")
    target = devices.get(target_id)
    if target is None:
        raise MatrixError(Errcode.NOT_FOUND, f"Unknown device {target_id}")
    key_id = f"{ED25519}:{self_signing.public_key}"
    signature = _new_signatures(user_id, signed, target, {key_id})[key_id]
    _verified(user_id, signed, self_signing.verify_key)
    return {key_id: signature}


def other_signature(
    signer: UserID,
    target: UserID,
    target_id: str,
    signed: Mapping[str, Any],
    keys: Mapping[tuple[UserID, str], CrossSigningKey],
) -> dict[str, str]:
    """The verified signature (key ID -> signature) of another user's master key by the
    signer's user-signing key."""
    user_signing = keys.get((signer, USER_SIGNING))
    if user_signing is None:
        raise MatrixError(Errcode.NOT_FOUND, "No user-signing key")
    master = keys.get((target, MASTER))
    if master is None or master.public_key != target_id:
        raise MatrixError(Errcode.NOT_FOUND, f"No master key {target_id} of {target}")
    key_id = f"{ED25519}:{user_signing.public_key}"
    signature = _new_signatures(signer, signed, master.json, {key_id})[key_id]
    _verified(signer, signed, user_signing.verify_key)
    return {key_id: signature}
