"""Ed25519 signing keys, signed JSON and event signatures.

Appendices, "Signing JSON" ("Signing Details", "Checking for a Signature") and
Server-Server API, "Signing Events": an event is signed over its *redacted* form, so the
signature still verifies after a redaction; the content hash in ``hashes`` covers the rest.

The signing key file is Synapse's format: one key per line,
``ed25519 <key version> <unpadded Base64 seed>``. Parsing and formatting work on text;
reading and writing the file is the caller's business (this package does no I/O).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from nacl.exceptions import BadSignatureError
from signedjson.key import (
    NACL_ED25519,
    decode_signing_key_base64,
    decode_verify_key_base64,
    encode_signing_key_base64,
    encode_verify_key_base64,
    generate_signing_key,
    get_verify_key,
)
from signedjson.types import SigningKey, VerifyKey
from unpaddedbase64 import decode_base64, encode_base64

from peyvand.events.canonical_json import encode_canonical_json
from peyvand.events.redaction import redact
from peyvand.events.room_versions import RoomVersion
from peyvand.types import JsonDict, ServerName, UserID

__all__ = [
    "SigningKey",
    "VerifyKey",
    "decode_verify_key",
    "format_signing_keys",
    "generate_signing_key",
    "get_verify_key",
    "key_id",
    "parse_signing_keys",
    "sign_event",
    "sign_json",
    "verify_event_signature",
    "verify_json_signature",
    "verify_key_base64",
]

ED25519: Final = NACL_ED25519


def key_id(key: SigningKey | VerifyKey) -> str:
    """The signing key identifier, ``<algorithm>:<version>`` (e.g. ``ed25519:a_bcde``)."""
    return f"{key.alg}:{key.version}"


def verify_key_base64(signing_key: SigningKey) -> str:
    """The unpadded Base64 public key, as published under ``verify_keys``."""
    return encode_verify_key_base64(get_verify_key(signing_key))


def decode_verify_key(identifier: str, key_base64: str) -> VerifyKey:
    """A verify key from its key identifier (``ed25519:<version>``) and unpadded Base64.

    Raises ``ValueError`` for an unsupported algorithm or a malformed key.
    """
    algorithm, sep, version = identifier.partition(":")
    if not sep or algorithm != ED25519:
        raise ValueError(f"unsupported key algorithm in {identifier!r}")
    try:
        key: VerifyKey = decode_verify_key_base64(algorithm, version, key_base64)
    except (ValueError, TypeError) as exc:  # binascii.Error and nacl's errors included
        raise ValueError(f"malformed verify key {identifier!r}") from exc
    return key


def parse_signing_keys(text: str) -> list[SigningKey]:
    """Parse the signing key file format; blank lines are ignored.

    Raises ``ValueError`` if a line is not ``ed25519 <version> <seed>`` with a 32-byte seed.
    """
    keys: list[SigningKey] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or parts[0] != ED25519:
            raise ValueError(f"signing key line {number}: expected 'ed25519 <version> <seed>'")
        try:
            keys.append(decode_signing_key_base64(*parts))
        except (ValueError, TypeError) as exc:  # binascii.Error and nacl's errors included
            raise ValueError(f"signing key line {number}: malformed seed") from exc
    return keys


def format_signing_keys(keys: Iterable[SigningKey]) -> str:
    """The signing key file text for ``keys``, one line each."""
    return "".join(f"{key.alg} {key.version} {encode_signing_key_base64(key)}\n" for key in keys)


def sign_json(
    obj: Mapping[str, Any], signer: ServerName | UserID, signing_key: SigningKey
) -> JsonDict:
    """A copy of ``obj`` with ``signatures[signer][key id]`` added ("Signing Details"); the
    signing entity is a server, or a user for device and cross-signing keys.

    The signature covers the canonical JSON of ``obj`` without ``signatures`` and
    ``unsigned``; existing signatures and ``unsigned`` are kept.
    """
    signed = dict(obj)
    signatures = {
        name: dict(sigs) for name, sigs in _as_mapping(signed.pop("signatures", None)).items()
    }
    unsigned = signed.pop("unsigned", None)
    signature = signing_key.sign(encode_canonical_json(signed)).signature
    signatures.setdefault(signer, {})[key_id(signing_key)] = encode_base64(signature)
    signed["signatures"] = signatures
    if unsigned is not None:
        signed["unsigned"] = unsigned
    return signed


def verify_json_signature(
    obj: Mapping[str, Any], signer: ServerName | UserID, verify_key: VerifyKey
) -> bool:
    """True if ``obj`` carries a valid signature by ``signer`` with ``verify_key``.

    Steps 1, 4-7 of "Checking for a Signature"; choosing and fetching the key (steps 2-3)
    is the key ring's job.
    """
    server_sigs = _as_mapping(_as_mapping(obj.get("signatures")).get(signer))
    signature_b64 = server_sigs.get(key_id(verify_key))
    if not isinstance(signature_b64, str):
        return False
    try:
        signature = decode_base64(signature_b64)
    except ValueError:  # binascii.Error, or non-ASCII text
        return False
    message = encode_canonical_json(
        {key: value for key, value in obj.items() if key not in ("signatures", "unsigned")}
    )
    try:
        verify_key.verify(message, signature)
    except (BadSignatureError, ValueError):  # forged, or a signature of the wrong length
        return False
    return True


def sign_event(
    data: Mapping[str, Any],
    room_version: RoomVersion,
    server_name: ServerName,
    signing_key: SigningKey,
) -> JsonDict:
    """A copy of ``data`` with ``server_name``'s signature over its redacted form merged in.

    ("Adding hashes and signatures to outgoing events".) ``data`` must already carry its
    content hash (``hashes.add_content_hash``), which the signature then covers.
    """
    signed_redacted = sign_json(redact(data, room_version), server_name, signing_key)
    event = dict(data)
    event["signatures"] = signed_redacted["signatures"]
    return event


def verify_event_signature(
    data: Mapping[str, Any],
    room_version: RoomVersion,
    server_name: ServerName,
    verify_key: VerifyKey,
) -> bool:
    """True if ``server_name`` signed the redacted form of ``data`` with ``verify_key``.

    ("Validating hashes and signatures on received events".) Holds for the full event and
    for any redacted copy of it; check the content hash separately.
    """
    return verify_json_signature(redact(data, room_version), server_name, verify_key)


def _as_mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
