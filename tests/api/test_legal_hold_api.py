"""The legal hold admin API (docs/compliance.md): place, list, read and release holds, as
a server admin; everyone else is refused."""

from __future__ import annotations

from harness.admin import login_admin
from harness.client import MatrixClient
from harness.server import HomeserverProcess

ADMIN = "/_peyvand/admin/v1"


async def test_admins_place_list_read_and_release_holds(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    admin = await login_admin(client, homeserver)
    alice = await client.register()
    room = "!held:" + homeserver.server_name
    body = {"kind": "room", "target": room, "case_id": "CASE-17", "reason": "litigation"}

    refused = await client.request("POST", f"{ADMIN}/legal_holds", json=body, token=alice)
    assert (refused.status, refused.body["errcode"]) == (403, "M_FORBIDDEN")
    assert (await client.request("GET", f"{ADMIN}/legal_holds", token=alice)).status == 403

    placed = (
        await client.request(
            "POST", f"{ADMIN}/legal_holds", json={**body, "since_ts": 5}, token=admin
        )
    ).ok()
    hold_id = placed["hold_id"]
    assert placed == {
        "hold_id": hold_id,
        "kind": "room",
        "target": room,
        "case_id": "CASE-17",
        "reason": "litigation",
        "since_ts": 5,
        "until_ts": None,
        "created_by": admin.user_id,
        "created_ts": placed["created_ts"],
        "active": True,
        "released_by": None,
        "released_ts": None,
        "release_reason": None,
    }
    user_hold = (
        await client.request(
            "POST",
            f"{ADMIN}/legal_holds",
            json={"kind": "user", "target": alice.user_id, "case_id": "C2", "reason": "r"},
            token=admin,
        )
    ).ok()

    listed = (await client.request("GET", f"{ADMIN}/legal_holds", token=admin)).ok()
    ids = [h["hold_id"] for h in listed["holds"]]
    assert hold_id in ids and user_hold["hold_id"] in ids
    one = await client.request("GET", f"{ADMIN}/legal_holds/{hold_id}", token=admin)
    assert one.ok() == placed

    release = f"{ADMIN}/legal_holds/{hold_id}/release"
    no_reason = await client.request("POST", release, json={}, token=admin)
    assert (no_reason.status, no_reason.body["errcode"]) == (400, "M_MISSING_PARAM")
    released = (await client.request("POST", release, json={"reason": "closed"}, token=admin)).ok()
    assert (released["active"], released["released_by"], released["release_reason"]) == (
        False,
        admin.user_id,
        "closed",
    )
    again = await client.request("POST", release, json={"reason": "closed"}, token=admin)
    assert (again.status, again.body["errcode"]) == (404, "M_NOT_FOUND")

    active = (await client.request("GET", f"{ADMIN}/legal_holds", token=admin)).ok()
    assert hold_id not in [h["hold_id"] for h in active["holds"]]
    everything = (
        await client.request("GET", f"{ADMIN}/legal_holds", params={"all": "true"}, token=admin)
    ).ok()
    assert released in everything["holds"]

    missing = await client.request("GET", f"{ADMIN}/legal_holds/nope", token=admin)
    assert (missing.status, missing.body["errcode"]) == (404, "M_NOT_FOUND")

    audit = (await client.request("GET", f"{ADMIN}/audit_log", token=admin)).ok()
    mine = [e for e in audit["entries"] if e["details"].get("hold_id") == hold_id]
    assert [(e["action"], e["actor"], e["target"]) for e in mine] == [
        ("hold", admin.user_id, room),
        ("release", admin.user_id, room),
    ]


async def test_malformed_holds_are_refused(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    admin = await login_admin(client, homeserver)
    base = {"kind": "room", "target": "!r:example.org", "case_id": "C", "reason": "R"}
    changes: list[tuple[dict[str, object], str]] = [
        ({"kind": "server"}, "M_INVALID_PARAM"),
        ({"target": "@alice:example.org"}, "M_INVALID_PARAM"),
        ({"case_id": ""}, "M_INVALID_PARAM"),
        ({"since_ts": 10, "until_ts": 9}, "M_INVALID_PARAM"),
        ({"since_ts": "yesterday"}, "M_BAD_JSON"),
        ({"reason": None}, "M_BAD_JSON"),
    ]
    for change, errcode in changes:
        answer = await client.request(
            "POST", f"{ADMIN}/legal_holds", json={**base, **change}, token=admin
        )
        assert (answer.status, answer.body["errcode"]) == (400, errcode), change
    missing = await client.request(
        "POST", f"{ADMIN}/legal_holds", json={"kind": "room"}, token=admin
    )
    assert (missing.status, missing.body["errcode"]) == (400, "M_MISSING_PARAM")
