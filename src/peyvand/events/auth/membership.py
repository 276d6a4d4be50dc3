"""Rule 5 (v12 numbering; rule 4 in v10/v11): ``m.room.member`` events.

Spec: "Room Versions", each version's "Authorization rules". Every function here either
returns (the event is allowed) or raises ``AuthError``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from nacl.exceptions import BadSignatureError
from signedjson.key import decode_verify_key_bytes
from signedjson.sign import SignatureVerifyException, verify_signed_json
from unpaddedbase64 import decode_base64

from peyvand.events.auth.errors import reject
from peyvand.events.auth.power_levels import (
    CREATE_KEY,
    POWER_LEVELS_KEY,
    get_named_level,
    get_user_power_level,
)
from peyvand.events.auth.selection import JOIN_RULES_KEY
from peyvand.events.pdu import Pdu, StateKey
from peyvand.types import ServerName, server_name_of

SignatureVerifier = Callable[[Pdu, ServerName], bool]


def check_membership_event(
    event: Pdu,
    auth_state: Mapping[StateKey, Pdu],
    verify_signature: SignatureVerifier | None,
) -> None:
    """Rule 5: allow or reject an ``m.room.member`` event."""
    version = event.room_version
    content = event.content
    membership = content.get("membership")
    # 5.1 If there is no state_key property, or no membership property in content, reject.
    if event.state_key is None or not isinstance(membership, str):
        raise reject(version, "5.1", "membership event without state_key or membership")
    # 5.2 (v8+) If content has a join_authorised_via_users_server key:
    if "join_authorised_via_users_server" in content and version.restricted_join_rule:
        # 5.2.1 If the event is not validly signed by the homeserver of the user ID denoted
        # by the key, reject.
        authoriser = content["join_authorised_via_users_server"]
        server = server_name_of(authoriser) if isinstance(authoriser, str) else ServerName("")
        if not server or not _signed_by(event, server, verify_signature):
            raise reject(version, "5.2.1", f"not signed by the authorising server {server!r}")
    if membership == "join":
        _check_join(event, auth_state)
    elif membership == "invite":
        _check_invite(event, auth_state)
    elif membership == "leave":
        _check_leave(event, auth_state)
    elif membership == "ban":
        _check_ban(event, auth_state)
    elif membership == "knock" and version.knock_join_rule:
        _check_knock(event, auth_state)
    else:
        # 5.8 Otherwise, the membership is unknown. Reject.
        raise reject(version, "5.8", f"unknown membership {membership!r}")


def _signed_by(event: Pdu, server: ServerName, verify_signature: SignatureVerifier | None) -> bool:
    """Whether ``server`` signed ``event``; without a verifier, whether a signature is present.

    Callers that pass no verifier vouch that every signature on the event was verified on
    receipt (Server-Server API, "Checks performed on receipt of a PDU").
    """
    if verify_signature is not None:
        return verify_signature(event, server)
    signatures = event.get("signatures")
    return isinstance(signatures, Mapping) and isinstance(signatures.get(server), Mapping)


def _membership_of(user_id: str, auth_state: Mapping[StateKey, Pdu]) -> str | None:
    member = auth_state.get(("m.room.member", user_id))
    return member.membership if member is not None else None


def _power_levels_content(auth_state: Mapping[StateKey, Pdu]) -> Mapping[str, Any] | None:
    power_levels = auth_state.get(POWER_LEVELS_KEY)
    return power_levels.content if power_levels is not None else None


def _check_join(event: Pdu, auth_state: Mapping[StateKey, Pdu]) -> None:
    """5.3 If membership is join."""
    version = event.room_version
    create_event = auth_state.get(CREATE_KEY)
    # 5.3.1 If the only previous event is an m.room.create and the state_key is the sender
    # of the m.room.create (v10: the creator named in its content), allow.
    if (
        create_event is not None
        and event.prev_event_ids == [create_event.event_id]
        and event.state_key == _create_event_creator(create_event)
    ):
        return
    # 5.3.2 If the sender does not match state_key, reject.
    if event.sender != event.state_key:
        raise reject(version, "5.3.2", "cannot join on behalf of another user")
    membership = _membership_of(event.sender, auth_state)
    # 5.3.3 If the sender is banned, reject.
    if membership == "ban":
        raise reject(version, "5.3.3", f"{event.sender} is banned")
    join_rules = auth_state.get(JOIN_RULES_KEY)
    # A room without m.room.join_rules is treated as invite-only.
    join_rule = join_rules.content.get("join_rule") if join_rules is not None else "invite"
    invite_like = {"invite"} | ({"knock"} if version.knock_join_rule else set())
    restricted = {
        rule
        for rule, enabled in (
            ("restricted", version.restricted_join_rule),
            ("knock_restricted", version.knock_restricted_join_rule),
        )
        if enabled
    }
    # 5.3.4 If the join_rule is invite or knock then allow if membership state is invite
    # or join.
    if join_rule in invite_like and membership in ("invite", "join"):
        return
    # 5.3.5 If the join_rule is restricted or knock_restricted:
    if join_rule in restricted:
        # 5.3.5.1 If membership state is join or invite, allow.
        if membership in ("join", "invite"):
            return
        # 5.3.5.2 If the join_authorised_via_users_server key in content is not a user with
        # sufficient permission to invite other users or is not a joined member of the
        # room, reject.
        authoriser = event.content.get("join_authorised_via_users_server")
        if not isinstance(authoriser, str) or _membership_of(authoriser, auth_state) != "join":
            raise reject(version, "5.3.5.2", "join not authorised by a joined member")
        invite_level = get_named_level(_power_levels_content(auth_state), "invite")
        if get_user_power_level(authoriser, auth_state, version) < invite_level:
            raise reject(version, "5.3.5.2", f"{authoriser} may not invite users")
        # 5.3.5.3 Otherwise, allow.
        return
    # 5.3.6 If the join_rule is public, allow.
    if join_rule == "public":
        return
    # 5.3.7 Otherwise, reject.
    raise reject(version, "5.3.7", f"join rule {join_rule!r} does not allow this join")


def _create_event_creator(create_event: Pdu) -> str | None:
    """The sender of the create event; before v11, the ``creator`` in its content."""
    if create_event.room_version.implicit_room_creator:
        return create_event.sender
    creator = create_event.content.get("creator")
    return creator if isinstance(creator, str) else None


def _check_invite(event: Pdu, auth_state: Mapping[StateKey, Pdu]) -> None:
    """5.4 If membership is invite."""
    version = event.room_version
    target = event.state_key or ""
    target_membership = _membership_of(target, auth_state)
    # 5.4.1 If content has a third_party_invite property:
    if "third_party_invite" in event.content:
        _check_third_party_invite(event, auth_state, target_membership)
        return
    # 5.4.2 If the sender's current membership state is not join, reject.
    if _membership_of(event.sender, auth_state) != "join":
        raise reject(version, "5.4.2", f"{event.sender} is not joined")
    # 5.4.3 If target user's current membership state is join or ban, reject.
    if target_membership in ("join", "ban"):
        raise reject(version, "5.4.3", f"{target} is {target_membership}")
    # 5.4.4 If the sender's power level is greater than or equal to the invite level, allow.
    invite_level = get_named_level(_power_levels_content(auth_state), "invite")
    if get_user_power_level(event.sender, auth_state, version) >= invite_level:
        return
    # 5.4.5 Otherwise, reject.
    raise reject(version, "5.4.5", f"{event.sender} may not invite users")


def _check_third_party_invite(
    event: Pdu, auth_state: Mapping[StateKey, Pdu], target_membership: str | None
) -> None:
    """5.4.1 A membership invite with a third_party_invite property."""
    version = event.room_version
    # 5.4.1.1 If target user is banned, reject.
    if target_membership == "ban":
        raise reject(version, "5.4.1.1", f"{event.state_key} is banned")
    # 5.4.1.2 If content.third_party_invite does not have a signed property, reject.
    third_party_invite = event.content["third_party_invite"]
    signed = third_party_invite.get("signed") if isinstance(third_party_invite, Mapping) else None
    if not isinstance(signed, Mapping):
        raise reject(version, "5.4.1.2", "third_party_invite has no signed object")
    # 5.4.1.3 If signed does not have mxid and token properties, reject.
    mxid, token = signed.get("mxid"), signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        raise reject(version, "5.4.1.3", "signed has no mxid or token")
    # 5.4.1.4 If mxid does not match state_key, reject.
    if mxid != event.state_key:
        raise reject(version, "5.4.1.4", "signed mxid does not match state_key")
    # 5.4.1.5 If there is no m.room.third_party_invite event in the current room state
    # with state_key matching token, reject.
    invite_event = auth_state.get(("m.room.third_party_invite", token))
    if invite_event is None:
        raise reject(version, "5.4.1.5", f"no m.room.third_party_invite for token {token!r}")
    # 5.4.1.6 If sender does not match sender of the m.room.third_party_invite, reject.
    if invite_event.sender != event.sender:
        raise reject(version, "5.4.1.6", "sender did not send the m.room.third_party_invite")
    # 5.4.1.7 If any signature in signed matches any public key in the
    # m.room.third_party_invite event, allow. The public keys are in content of
    # m.room.third_party_invite as: 5.4.1.7.1 a single public key in the public_key
    # property; 5.4.1.7.2 a list of public keys in the public_keys property.
    if any(_signed_with(signed, key) for key in _public_keys(invite_event.content)):
        return
    # 5.4.1.8 Otherwise, reject.
    raise reject(version, "5.4.1.8", "no signature in signed matches the invite's public keys")


def _public_keys(content: Mapping[str, Any]) -> list[str]:
    keys: list[str] = []
    if isinstance(content.get("public_key"), str):
        keys.append(content["public_key"])
    public_keys = content.get("public_keys")
    if isinstance(public_keys, list):
        keys.extend(
            entry["public_key"]
            for entry in public_keys
            if isinstance(entry, Mapping) and isinstance(entry.get("public_key"), str)
        )
    return keys


def _signed_with(signed: Mapping[str, Any], public_key: str) -> bool:
    """Whether any ed25519 signature in ``signed`` verifies with ``public_key`` (base64)."""
    signatures = signed.get("signatures")
    if not isinstance(signatures, Mapping):
        return False
    try:
        key_bytes = decode_base64(public_key)
    except ValueError:
        return False
    for signer, by_key_id in signatures.items():
        if not isinstance(by_key_id, Mapping):
            continue
        for key_id in by_key_id:
            if not isinstance(key_id, str) or not key_id.startswith("ed25519:"):
                continue
            try:
                verify_key = decode_verify_key_bytes(key_id, key_bytes)
                verify_signed_json(dict(signed), signer, verify_key)
            except (SignatureVerifyException, BadSignatureError, ValueError, TypeError):
                continue
            return True
    return False


def _check_leave(event: Pdu, auth_state: Mapping[StateKey, Pdu]) -> None:
    """5.5 If membership is leave."""
    version = event.room_version
    target = event.state_key or ""
    # 5.5.1 If the sender matches state_key, allow if and only if that user's current
    # membership state is invite, join, or knock (before v7: invite or join).
    if event.sender == target:
        leavable = ("invite", "join", "knock") if version.knock_join_rule else ("invite", "join")
        if _membership_of(target, auth_state) in leavable:
            return
        raise reject(version, "5.5.1", f"{target} may not leave: not {' or '.join(leavable)}")
    # 5.5.2 If the sender's current membership state is not join, reject.
    if _membership_of(event.sender, auth_state) != "join":
        raise reject(version, "5.5.2", f"{event.sender} is not joined")
    power_levels = _power_levels_content(auth_state)
    sender_level = get_user_power_level(event.sender, auth_state, version)
    # 5.5.3 If the target user's current membership state is ban, and the sender's power
    # level is less than the ban level, reject.
    if _membership_of(target, auth_state) == "ban" and sender_level < get_named_level(
        power_levels, "ban"
    ):
        raise reject(version, "5.5.3", f"{event.sender} may not unban users")
    # 5.5.4 If the sender's power level is greater than or equal to the kick level, and
    # the target user's power level is less than the sender's power level, allow.
    if sender_level >= get_named_level(power_levels, "kick") and (
        get_user_power_level(target, auth_state, version) < sender_level
    ):
        return
    # 5.5.5 Otherwise, reject.
    raise reject(version, "5.5.5", f"{event.sender} may not kick {target}")


def _check_ban(event: Pdu, auth_state: Mapping[StateKey, Pdu]) -> None:
    """5.6 If membership is ban."""
    version = event.room_version
    target = event.state_key or ""
    # 5.6.1 If the sender's current membership state is not join, reject.
    if _membership_of(event.sender, auth_state) != "join":
        raise reject(version, "5.6.1", f"{event.sender} is not joined")
    # 5.6.2 If the sender's power level is greater than or equal to the ban level, and the
    # target user's power level is less than the sender's power level, allow.
    sender_level = get_user_power_level(event.sender, auth_state, version)
    ban_level = get_named_level(_power_levels_content(auth_state), "ban")
    if sender_level >= ban_level and (
        get_user_power_level(target, auth_state, version) < sender_level
    ):
        return
    # 5.6.3 Otherwise, reject.
    raise reject(version, "5.6.3", f"{event.sender} may not ban {target}")


def _check_knock(event: Pdu, auth_state: Mapping[StateKey, Pdu]) -> None:
    """5.7 If membership is knock."""
    version = event.room_version
    join_rules = auth_state.get(JOIN_RULES_KEY)
    join_rule = join_rules.content.get("join_rule") if join_rules is not None else None
    knock_rules = {"knock"} | (
        {"knock_restricted"} if version.knock_restricted_join_rule else set()
    )
    # 5.7.1 If the join_rule is anything other than knock or knock_restricted, reject.
    if join_rule not in knock_rules:
        raise reject(version, "5.7.1", f"join rule {join_rule!r} does not allow knocking")
    # 5.7.2 If sender does not match state_key, reject.
    if event.sender != event.state_key:
        raise reject(version, "5.7.2", "cannot knock on behalf of another user")
    # 5.7.3 If the sender's current membership is not ban, invite, or join, allow.
    membership = _membership_of(event.sender, auth_state)
    if membership not in ("ban", "invite", "join"):
        return
    # 5.7.4 Otherwise, reject.
    raise reject(version, "5.7.4", f"{event.sender} is already {membership}")
