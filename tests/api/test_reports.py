"""Client-Server API "Reporting content" and the admin listing of reports."""

from __future__ import annotations

import pytest

from harness.admin import login_admin
from harness.client import Account, MatrixClient, unique_localpart
from harness.server import HomeserverProcess
from peyvand.errors import Errcode, MatrixError
from peyvand.services.federation.invite_inbox import RemoteInviteLimiter
from peyvand.types import ServerName

REPORTS = "/_peyvand/admin/v1/reports"


async def _room_with_message(client: MatrixClient, owner: Account) -> tuple[str, str]:
    room_id = (await client.request("POST", "createRoom", json={}, token=owner)).ok()["room_id"]
    sent = await client.request(
        "PUT",
        f"rooms/{room_id}/send/m.room.message/{unique_localpart('txn')}",
        json={"msgtype": "m.text", "body": "spam spam spam"},
        token=owner,
    )
    return room_id, sent.ok()["event_id"]


async def test_reports_reach_admins(client: MatrixClient, homeserver: HomeserverProcess) -> None:
    alice = await client.register()
    bob = await client.register()
    room_id, event_id = await _room_with_message(client, alice)

    reason = unique_localpart("offensive")
    (
        await client.request(
            "POST",
            f"rooms/{room_id}/report/{event_id}",
            json={"reason": reason, "score": -100},
            token=alice,
        )
    ).ok()
    (
        await client.request(
            "POST", f"rooms/{room_id}/report", json={"reason": reason + "-room"}, token=alice
        )
    ).ok()
    (
        await client.request(
            "POST", f"users/{bob.user_id}/report", json={"reason": reason + "-user"}, token=alice
        )
    ).ok()

    # Errors: not in the room, unknown event, unknown user, bad bodies, too long a reason.
    not_member = await client.request(
        "POST", f"rooms/{room_id}/report/{event_id}", json={"reason": "x"}, token=bob
    )
    assert (not_member.status, not_member.body["errcode"]) == (404, "M_NOT_FOUND")
    room_not_member = await client.request(
        "POST", f"rooms/{room_id}/report", json={"reason": "x"}, token=bob
    )
    assert room_not_member.status == 404
    unknown_event = await client.request(
        "POST", f"rooms/{room_id}/report/$nosuchevent", json={"reason": "x"}, token=alice
    )
    assert (unknown_event.status, unknown_event.body["errcode"]) == (404, "M_NOT_FOUND")
    unknown_user = await client.request(
        "POST", "users/@nobody-here:example.invalid/report", json={"reason": "x"}, token=alice
    )
    assert (unknown_user.status, unknown_user.body["errcode"]) == (404, "M_NOT_FOUND")
    missing_reason = await client.request("POST", f"rooms/{room_id}/report", json={}, token=alice)
    assert (missing_reason.status, missing_reason.body["errcode"]) == (400, "M_MISSING_PARAM")
    bad_type = await client.request(
        "POST", f"users/{bob.user_id}/report", json={"reason": 5}, token=alice
    )
    assert (bad_type.status, bad_type.body["errcode"]) == (400, "M_BAD_JSON")
    too_long = await client.request(
        "POST", f"rooms/{room_id}/report", json={"reason": "x" * 1001}, token=alice
    )
    assert (too_long.status, too_long.body["errcode"]) == (400, "M_INVALID_PARAM")

    # Only admins see them.
    forbidden = await client.request("GET", REPORTS, token=alice)
    assert (forbidden.status, forbidden.body["errcode"]) == (403, "M_FORBIDDEN")
    admin = await login_admin(client, homeserver)
    listing = (await client.request("GET", REPORTS, token=admin)).ok()
    mine = [r for r in listing["reports"] if r["reason"].startswith(reason)]
    assert [(r["kind"], r["reporter"]) for r in mine] == [
        ("user", alice.user_id),
        ("room", alice.user_id),
        ("event", alice.user_id),
    ]
    user_report, room_report, event_report = mine
    assert user_report["user_id"] == bob.user_id
    assert room_report["room_id"] == room_id and "event_id" not in room_report
    assert (event_report["room_id"], event_report["event_id"]) == (room_id, event_id)
    assert event_report["score"] == -100 and event_report["reason"] == reason
    assert listing["total"] >= 3

    one = (await client.request("GET", f"{REPORTS}/{event_report['id']}", token=admin)).ok()
    assert one == event_report
    missing = await client.request("GET", f"{REPORTS}/999999999", token=admin)
    assert missing.status == 404
    page = (await client.request("GET", REPORTS, token=admin, params={"limit": "1"})).ok()
    assert len(page["reports"]) == 1 and "next_token" in page
    older = (
        await client.request(
            "GET", REPORTS, token=admin, params={"limit": "1", "from": str(page["next_token"])}
        )
    ).ok()
    assert older["reports"][0]["id"] < page["reports"][0]["id"]


def test_remote_invite_limiter() -> None:
    now = [0.0]
    limiter = RemoteInviteLimiter(3, 2, clock=lambda: now[0])
    limiter.check(ServerName("spam.example"), "@a:spam.example")
    limiter.check(ServerName("spam.example"), "@a:spam.example")
    with pytest.raises(MatrixError) as user_limited:
        limiter.check(ServerName("spam.example"), "@a:spam.example")
    assert user_limited.value.errcode == Errcode.LIMIT_EXCEEDED
    assert user_limited.value.status == 429
    # Another user of the same server: one token left for the server.
    limiter.check(ServerName("spam.example"), "@b:spam.example")
    with pytest.raises(MatrixError) as server_limited:
        limiter.check(ServerName("spam.example"), "@c:spam.example")
    retry = server_limited.value.extra["retry_after_ms"]
    assert 0 < retry <= 20_000
    # Other servers are unaffected; tokens come back with time.
    limiter.check(ServerName("other.example"), "@a:other.example")
    now[0] += 30.0
    limiter.check(ServerName("spam.example"), "@a:spam.example")
