"""Rule 5 (v12 numbering; rule 4 in v10/v11): m.room.member events, per room version."""

from __future__ import annotations

import pytest
from signedjson.key import encode_verify_key_base64, generate_signing_key, get_verify_key
from signedjson.sign import sign_json

from harness.auth_room import ALICE, BOB, CAROL, DAVE, AuthRoom
from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import ROOM_V10, ROOM_V12, RoomVersion

# 5.1 -------------------------------------------------------------------------------------


def test_5_1_member_event_without_membership_rejected(room: AuthRoom) -> None:
    pdu = room.event("m.room.member", BOB, {}, state_key=BOB)
    room.rejects(pdu, "5.1")


def test_5_1_member_event_without_state_key_rejected(room: AuthRoom) -> None:
    pdu = room.event("m.room.member", BOB, {"membership": "join"})
    room.rejects(pdu, "5.1")


# 5.3 join --------------------------------------------------------------------------------


def test_5_3_1_creator_first_join_allowed(make_room: type[AuthRoom], version: RoomVersion) -> None:
    room = make_room(version, with_power_levels=False, join_rule=None)
    join = room.member(ALICE, "join", prev_events=[room.create.event_id])
    room.state.pop(("m.room.member", ALICE))
    room.allows(join)


def test_5_3_1_first_join_by_non_creator_not_special(
    make_room: type[AuthRoom], version: RoomVersion
) -> None:
    room = make_room(version, with_power_levels=False, join_rule=None)
    join = room.member(BOB, "join", prev_events=[room.create.event_id])
    room.rejects(join, "5.3.7")


def test_5_3_1_v10_uses_content_creator(make_room: type[AuthRoom]) -> None:
    """In v10 the creator is content.creator, even when it differs from the sender."""
    room = make_room(
        ROOM_V10, with_power_levels=False, join_rule=None, create_content={"creator": BOB}
    )
    room.state.pop(("m.room.member", ALICE))
    room.rejects(room.member(ALICE, "join", prev_events=[room.create.event_id]), "5.3.7")
    room.allows(room.member(BOB, "join", prev_events=[room.create.event_id]))


def test_5_3_2_join_for_someone_else_rejected(room: AuthRoom) -> None:
    room.set_join_rule("public")
    room.rejects(room.member(BOB, "join", sender=ALICE), "5.3.2")


def test_5_3_3_join_after_ban_rejected(room: AuthRoom) -> None:
    room.set_join_rule("public")
    room.set_membership(BOB, "ban")
    room.rejects(room.member(BOB, "join"), "5.3.3")


def test_5_3_4_invite_only_join_uninvited_rejected(room: AuthRoom) -> None:
    room.rejects(room.member(BOB, "join"), "5.3.7")


@pytest.mark.parametrize("join_rule", ["invite", "knock"])
@pytest.mark.parametrize("membership", ["invite", "join"])
def test_5_3_4_invited_or_joined_may_join(room: AuthRoom, join_rule: str, membership: str) -> None:
    room.set_join_rule(join_rule)
    room.set_membership(BOB, membership)
    room.allows(room.member(BOB, "join"))


def test_5_3_4_knocked_user_cannot_join_knock_room(room: AuthRoom) -> None:
    room.set_join_rule("knock")
    room.set_membership(BOB, "knock")
    room.rejects(room.member(BOB, "join"), "5.3.7")


def test_5_3_join_without_join_rules_is_invite_only(
    make_room: type[AuthRoom], version: RoomVersion
) -> None:
    room = make_room(version, join_rule=None)
    room.rejects(room.member(BOB, "join"), "5.3.7")
    room.set_membership(BOB, "invite")
    room.allows(room.member(BOB, "join"))


@pytest.mark.parametrize("join_rule", ["restricted", "knock_restricted"])
def test_5_3_5_restricted_join_via_authorised_user(room: AuthRoom, join_rule: str) -> None:
    room.set_join_rule(join_rule)
    room.set_membership(DAVE, "join")  # a joined user on a.test with the default level 0
    join = room.event(
        "m.room.member",
        BOB,
        {"membership": "join", "join_authorised_via_users_server": DAVE},
        state_key=BOB,
        signatures={"b.test": {"ed25519:k": "s"}, "a.test": {"ed25519:k": "s"}},
    )
    room.allows(join)


@pytest.mark.parametrize("join_rule", ["restricted", "knock_restricted"])
def test_5_3_5_1_restricted_join_by_invited_user(room: AuthRoom, join_rule: str) -> None:
    room.set_join_rule(join_rule)
    room.set_membership(BOB, "invite")
    room.allows(room.member(BOB, "join"))


def test_5_3_5_2_restricted_join_without_authoriser_rejected(room: AuthRoom) -> None:
    room.set_join_rule("restricted")
    room.rejects(room.member(BOB, "join"), "5.3.5.2")


def test_5_3_5_2_restricted_join_authoriser_not_joined(room: AuthRoom) -> None:
    room.set_join_rule("restricted")
    room.set_membership(DAVE, "invite")
    join = room.member(BOB, "join", join_authorised_via_users_server=DAVE)
    room.rejects(join, "5.3.5.2", verify_signature=lambda _pdu, _server: True)


def test_5_3_5_2_restricted_join_authoriser_cannot_invite(room: AuthRoom) -> None:
    room.set_join_rule("restricted")
    room.set_levels(invite=50)
    room.set_membership(DAVE, "join")
    join = room.member(BOB, "join", join_authorised_via_users_server=DAVE)
    room.rejects(join, "5.3.5.2", verify_signature=lambda _pdu, _server: True)


def test_5_2_1_authorising_server_signature_required(room: AuthRoom) -> None:
    room.set_join_rule("restricted")
    room.set_membership(DAVE, "join")
    join = room.member(BOB, "join", join_authorised_via_users_server=DAVE)
    room.rejects(join, "5.2.1")  # no a.test signature present
    seen: list[str] = []

    def verifier(_pdu: object, server: str) -> bool:
        seen.append(server)
        return False

    room.rejects(join, "5.2.1", verify_signature=verifier)
    assert seen == ["a.test"]
    room.allows(join, verify_signature=lambda _pdu, server: server == "a.test")


def test_5_3_6_public_join_allowed(room: AuthRoom) -> None:
    room.set_join_rule("public")
    room.allows(room.member(BOB, "join"))


def test_5_3_7_unknown_join_rule_rejected(room: AuthRoom) -> None:
    room.set_join_rule("private")
    room.rejects(room.member(BOB, "join"), "5.3.7")


# 5.4 invite ------------------------------------------------------------------------------


def test_5_4_invite_by_member_allowed(room: AuthRoom) -> None:
    room.allows(room.member(BOB, "invite", sender=ALICE))


def test_5_4_2_invite_by_non_member_rejected(room: AuthRoom) -> None:
    room.rejects(room.member(CAROL, "invite", sender=BOB), "5.4.2")
    room.set_membership(BOB, "invite")
    room.rejects(room.member(CAROL, "invite", sender=BOB), "5.4.2")


@pytest.mark.parametrize("membership", ["join", "ban"])
def test_5_4_3_invite_of_joined_or_banned_rejected(room: AuthRoom, membership: str) -> None:
    room.set_membership(BOB, membership)
    room.rejects(room.member(BOB, "invite", sender=ALICE), "5.4.3")


def test_5_4_5_invite_below_invite_level_rejected(room: AuthRoom) -> None:
    room.set_levels(invite=50)
    room.set_membership(BOB, "join")
    room.rejects(room.member(CAROL, "invite", sender=BOB), "5.4.5")
    room.allows(room.member(CAROL, "invite", sender=ALICE))


# 5.4.1 third-party invites ----------------------------------------------------------------


class ThirdPartyInvite:
    """An m.room.third_party_invite from Alice and an identity server key that signs for it."""

    def __init__(self, room: AuthRoom, *, key_field: str = "public_key") -> None:
        self.room = room
        self.key = generate_signing_key("0")
        public = encode_verify_key_base64(get_verify_key(self.key))
        content: dict[str, object] = {"display_name": "b...@example.org"}
        if key_field == "public_key":
            content["public_key"] = public
        else:
            content["public_keys"] = [{"public_key": "bm90IGEga2V5"}, {"public_key": public}]
        room.add(room.event("m.room.third_party_invite", ALICE, content, state_key="tok"))

    def signed(self, mxid: str = BOB, token: str = "tok") -> dict[str, object]:
        return sign_json({"mxid": mxid, "token": token}, "id.test", self.key)

    def invite(self, signed: dict[str, object] | None, sender: str = ALICE) -> Pdu:
        tpi: dict[str, object] = {"display_name": "b...@example.org"}
        if signed is not None:
            tpi["signed"] = signed
        return self.room.member(BOB, "invite", sender=sender, third_party_invite=tpi)


@pytest.mark.parametrize("key_field", ["public_key", "public_keys"])
def test_5_4_1_7_third_party_invite_signature_checked(room: AuthRoom, key_field: str) -> None:
    tpi = ThirdPartyInvite(room, key_field=key_field)
    room.allows(tpi.invite(tpi.signed()))


def test_5_4_1_8_third_party_invite_bad_signature_rejected(room: AuthRoom) -> None:
    tpi = ThirdPartyInvite(room)
    forged = sign_json({"mxid": BOB, "token": "tok"}, "id.test", generate_signing_key("0"))
    room.rejects(tpi.invite(forged), "5.4.1.8")
    tampered = tpi.signed()
    tampered["extra"] = "changed after signing"
    room.rejects(tpi.invite(tampered), "5.4.1.8")
    room.rejects(tpi.invite({"mxid": BOB, "token": "tok"}), "5.4.1.8")


def test_5_4_1_third_party_invite_steps(room: AuthRoom) -> None:
    tpi = ThirdPartyInvite(room)
    room.rejects(tpi.invite(None), "5.4.1.2")
    room.rejects(tpi.invite({"token": "tok"}), "5.4.1.3")
    room.rejects(tpi.invite(tpi.signed(mxid=CAROL)), "5.4.1.4")
    room.rejects(tpi.invite(tpi.signed(token="other")), "5.4.1.5")
    room.set_membership(DAVE, "join")
    room.rejects(tpi.invite(tpi.signed(), sender=DAVE), "5.4.1.6")
    room.set_membership(BOB, "ban")
    room.rejects(tpi.invite(tpi.signed()), "5.4.1.1")


# 5.5 leave -------------------------------------------------------------------------------


@pytest.mark.parametrize("membership", ["invite", "join", "knock"])
def test_5_5_1_own_leave_allowed(room: AuthRoom, membership: str) -> None:
    room.set_membership(BOB, membership)
    room.allows(room.member(BOB, "leave"))


@pytest.mark.parametrize("membership", [None, "leave", "ban"])
def test_5_5_1_own_leave_from_other_states_rejected(room: AuthRoom, membership: str | None) -> None:
    if membership is not None:
        room.set_membership(BOB, membership)
    room.rejects(room.member(BOB, "leave"), "5.5.1")


def test_5_5_2_kick_by_non_member_rejected(room: AuthRoom) -> None:
    room.set_membership(CAROL, "join")
    room.set_levels({BOB: 100, CAROL: 0})
    room.rejects(room.member(CAROL, "leave", sender=BOB), "5.5.2")


def test_5_5_4_kick_by_higher_level_allowed(room: AuthRoom) -> None:
    room.set_membership(BOB, "join")
    room.allows(room.member(BOB, "leave", sender=ALICE))


def test_5_5_5_kick_by_lower_level_rejected(room: AuthRoom) -> None:
    room.set_membership(BOB, "join")
    room.set_membership(CAROL, "join")
    room.set_levels({BOB: 10, CAROL: 50})
    room.rejects(room.member(CAROL, "leave", sender=BOB), "5.5.5")
    room.allows(room.member(BOB, "leave", sender=CAROL))


def test_5_5_5_kick_of_equal_level_rejected(room: AuthRoom) -> None:
    room.set_membership(BOB, "join")
    room.set_membership(CAROL, "join")
    room.set_levels({BOB: 50, CAROL: 50})
    room.rejects(room.member(CAROL, "leave", sender=BOB), "5.5.5")


def test_5_5_3_unban_needs_ban_level(room: AuthRoom) -> None:
    room.set_membership(BOB, "join")
    room.set_membership(CAROL, "ban")
    room.set_levels({BOB: 60}, kick=50, ban=80)
    room.rejects(room.member(CAROL, "leave", sender=BOB), "5.5.3")
    room.allows(room.member(CAROL, "leave", sender=ALICE))


# 5.6 ban ---------------------------------------------------------------------------------


def test_5_6_ban_by_higher_level_allowed(room: AuthRoom) -> None:
    room.set_membership(BOB, "join")
    room.allows(room.member(BOB, "ban", sender=ALICE))


def test_5_6_1_ban_by_non_member_rejected(room: AuthRoom) -> None:
    room.set_levels({BOB: 100})
    room.rejects(room.member(CAROL, "ban", sender=BOB), "5.6.1")


def test_5_6_3_ban_by_lower_level_rejected(room: AuthRoom) -> None:
    room.set_membership(BOB, "join")
    room.set_membership(CAROL, "join")
    room.set_levels({BOB: 49, CAROL: 0})
    room.rejects(room.member(CAROL, "ban", sender=BOB), "5.6.3")


# 5.7 knock -------------------------------------------------------------------------------


@pytest.mark.parametrize("join_rule", ["knock", "knock_restricted"])
def test_5_7_knock_allowed_in_knock_rooms(room: AuthRoom, join_rule: str) -> None:
    room.set_join_rule(join_rule)
    room.allows(room.member(BOB, "knock"))


@pytest.mark.parametrize("join_rule", ["public", "invite", "restricted"])
def test_5_7_1_knock_only_in_knock_rooms(room: AuthRoom, join_rule: str) -> None:
    room.set_join_rule(join_rule)
    room.rejects(room.member(BOB, "knock"), "5.7.1")


def test_5_7_2_knock_for_someone_else_rejected(room: AuthRoom) -> None:
    room.set_join_rule("knock")
    room.rejects(room.member(BOB, "knock", sender=ALICE), "5.7.2")


@pytest.mark.parametrize("membership", ["ban", "invite", "join"])
def test_5_7_4_knock_when_banned_invited_or_joined_rejected(
    room: AuthRoom, membership: str
) -> None:
    room.set_join_rule("knock")
    room.set_membership(BOB, membership)
    room.rejects(room.member(BOB, "knock"), "5.7.4")


def test_5_8_unknown_membership_rejected(room: AuthRoom) -> None:
    room.rejects(room.member(BOB, "wander"), "5.8")


# v12 creators ------------------------------------------------------------------------------


def test_v12_creator_cannot_be_kicked_or_banned_by_pl_100(make_room: type[AuthRoom]) -> None:
    room = make_room(ROOM_V12, create_content={"additional_creators": [CAROL]})
    room.set_membership(BOB, "join")
    room.set_membership(CAROL, "join")
    room.set_power_levels({"users": {BOB: 100}})
    for creator in (ALICE, CAROL):
        room.rejects(room.member(creator, "leave", sender=BOB), "5.5.5")
        room.rejects(room.member(creator, "ban", sender=BOB), "5.6.3")
    room.allows(room.member(BOB, "ban", sender=CAROL))


def test_v12_creators_cannot_kick_each_other(make_room: type[AuthRoom]) -> None:
    """Creators have equal (infinite) power, so neither can kick the other."""
    room = make_room(ROOM_V12, create_content={"additional_creators": [CAROL]})
    room.set_membership(CAROL, "join")
    room.rejects(room.member(CAROL, "leave", sender=ALICE), "5.5.5")
