"""Signature checks on received PDUs (Server-Server API, "Validating hashes and
signatures on received events")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from peyvand.events.pdu import Pdu
from peyvand.events.received import required_signatures
from peyvand.events.redaction import redact
from peyvand.federation.keyring import Keyring
from peyvand.types import ServerName


async def check_pdu_signatures(keyring: Keyring, pdus: Sequence[Pdu]) -> list[bool]:
    """Every server that must sign each event did: see
    ``events.received.required_signatures``. One answer per PDU, in order."""
    checks: list[tuple[ServerName, Mapping[str, Any], int]] = []
    owners: list[int] = []
    for index, pdu in enumerate(pdus):
        redacted = redact(pdu.data, pdu.room_version)
        for server, valid_at in required_signatures(pdu):
            checks.append((server, redacted, valid_at))
            owners.append(index)
    results = await keyring.verify_event_signatures(checks)
    valid = [True] * len(pdus)
    for index, ok in zip(owners, results, strict=True):
        valid[index] = valid[index] and ok
    return valid
