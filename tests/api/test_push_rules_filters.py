"""Push rules and filters over HTTP against a real Peyvand (every backend).

Client-Server API, "Push Rules: API" (pushrules.yaml) and "Filtering" (filter.yaml).
"""

from __future__ import annotations

from urllib.parse import quote

from harness.client import Account, MatrixClient, Response


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


RULES = "pushrules/global"


async def test_default_ruleset(client: MatrixClient) -> None:
    alice = await client.register()
    everything = (await client.request("GET", "pushrules/", token=alice)).ok()
    ruleset = everything["global"]
    assert set(ruleset) == {"override", "content", "room", "sender", "underride"}
    assert ruleset["override"][0]["rule_id"] == ".m.rule.master"
    invite = next(r for r in ruleset["override"] if r["rule_id"] == ".m.rule.invite_for_me")
    assert {"kind": "event_match", "key": "state_key", "pattern": alice.user_id} in (
        invite["conditions"]
    )
    assert (await client.request("GET", f"{RULES}/", token=alice)).ok() == ruleset
    underride = (await client.request("GET", f"{RULES}/underride/", token=alice)).ok()
    assert [r["rule_id"] for r in underride][-1] == ".m.rule.encrypted"
    assert (await client.request("GET", "pushrules/", token=None)).status == 401


async def test_rule_lifecycle_and_ordering(client: MatrixClient) -> None:
    alice = await client.register()
    for rule_id in ("tea", "time"):
        body: dict[str, object] = {"pattern": rule_id, "actions": ["notify"]}
        (await client.request("PUT", f"{RULES}/content/{rule_id}", json=body, token=alice)).ok()
    body = {"pattern": "cake*lie", "actions": ["notify", {"set_tweak": "highlight"}]}
    (
        await client.request(
            "PUT", f"{RULES}/content/nocake", json=body, token=alice, params={"after": "time"}
        )
    ).ok()
    content = (await client.request("GET", f"{RULES}/content/", token=alice)).ok()
    assert [r["rule_id"] for r in content] == ["time", "nocake", "tea"]
    rule = (await client.request("GET", f"{RULES}/content/nocake", token=alice)).ok()
    assert rule == {
        "rule_id": "nocake",
        "default": False,
        "enabled": True,
        "pattern": "cake*lie",
        "actions": ["notify", {"set_tweak": "highlight"}],
    }

    enabled = f"{RULES}/content/nocake/enabled"
    (await client.request("PUT", enabled, json={"enabled": False}, token=alice)).ok()
    assert (await client.request("GET", enabled, token=alice)).ok() == {"enabled": False}
    actions = f"{RULES}/content/nocake/actions"
    (await client.request("PUT", actions, json={"actions": ["dont_notify"]}, token=alice)).ok()
    # "Historical Actions" are kept as written (and ignored when evaluating), as in Synapse.
    assert (await client.request("GET", actions, token=alice)).ok() == {"actions": ["dont_notify"]}

    (await client.request("DELETE", f"{RULES}/content/nocake", token=alice)).ok()
    missing = await client.request("GET", f"{RULES}/content/nocake", token=alice)
    assert_error(missing, 404, "M_NOT_FOUND")
    again = await client.request("DELETE", f"{RULES}/content/nocake", token=alice)
    assert_error(again, 404, "M_NOT_FOUND")


async def test_room_sender_and_override_rules(client: MatrixClient) -> None:
    alice = await client.register()
    room = quote("!abc:example.org", safe="")
    (await client.request("PUT", f"{RULES}/room/{room}", json={"actions": []}, token=alice)).ok()
    sender = quote("@spam:example.org", safe="")
    (
        await client.request("PUT", f"{RULES}/sender/{sender}", json={"actions": []}, token=alice)
    ).ok()
    cond = [{"kind": "event_match", "key": "type", "pattern": "m.call.*"}]
    body = {"conditions": cond, "actions": ["notify"]}
    (await client.request("PUT", f"{RULES}/override/calls", json=body, token=alice)).ok()
    ruleset = (await client.request("GET", f"{RULES}/", token=alice)).ok()
    assert ruleset["room"] == [
        {"rule_id": "!abc:example.org", "default": False, "enabled": True, "actions": []}
    ]
    assert ruleset["sender"][0]["rule_id"] == "@spam:example.org"
    # User overrides rank below .m.rule.master and above the other defaults.
    assert [r["rule_id"] for r in ruleset["override"][:3]] == [
        ".m.rule.master",
        "calls",
        ".m.rule.suppress_notices",
    ]
    assert ruleset["override"][1]["conditions"] == cond


async def test_default_rules_can_change_but_not_go(client: MatrixClient) -> None:
    alice = await client.register()
    master = f"{RULES}/override/.m.rule.master"
    (await client.request("PUT", f"{master}/enabled", json={"enabled": True}, token=alice)).ok()
    assert (await client.request("GET", f"{master}/enabled", token=alice)).ok() == {"enabled": True}
    message = f"{RULES}/underride/.m.rule.message"
    new_actions = {"actions": ["notify", {"set_tweak": "sound", "value": "bing"}]}
    (await client.request("PUT", f"{message}/actions", json=new_actions, token=alice)).ok()
    rule = (await client.request("GET", message, token=alice)).ok()
    assert rule["actions"] == new_actions["actions"] and rule["default"] is True
    assert_error(await client.request("DELETE", master, token=alice), 400, "M_INVALID_PARAM")
    # Another user's rules are untouched.
    bob = await client.register()
    assert (await client.request("GET", f"{master}/enabled", token=bob)).ok() == {"enabled": False}


async def test_push_rule_errors(client: MatrixClient) -> None:
    alice = await client.register()
    body = {"pattern": "x", "actions": ["notify"]}

    async def put(path: str, json: object, **params: str) -> Response:
        return await client.request("PUT", path, json=json, token=alice, params=params or None)

    assert_error(await put(f"{RULES}/bogus/x", body), 400, "M_INVALID_PARAM")
    assert_error(await put(f"{RULES}/content/.reserved", body), 400, "M_INVALID_PARAM")
    assert_error(await put(f"{RULES}/content/x", {"actions": []}), 400, "M_MISSING_PARAM")
    assert_error(await put(f"{RULES}/content/x", {"pattern": "x"}), 400, "M_MISSING_PARAM")
    bad_actions = {"pattern": "x", "actions": ["explode"]}
    assert_error(await put(f"{RULES}/content/x", bad_actions), 400, "M_INVALID_PARAM")
    assert_error(await put(f"{RULES}/content/x", body, before="nope"), 400, "M_UNKNOWN")
    get_bad_kind = await client.request("GET", f"{RULES}/bogus/x", token=alice)
    assert_error(get_bad_kind, 400, "M_INVALID_PARAM")
    assert_error(
        await put(f"{RULES}/content/missing/enabled", {"enabled": True}), 404, "M_NOT_FOUND"
    )
    assert_error(
        await put(f"{RULES}/override/.m.rule.nope/actions", {"actions": []}), 404, "M_NOT_FOUND"
    )
    assert_error(
        await put(f"{RULES}/override/.m.rule.master/enabled", {"enabled": "yes"}),
        400,
        "M_BAD_JSON",
    )


def filter_path(account: Account, filter_id: str | None = None) -> str:
    path = f"user/{quote(account.user_id, safe='')}/filter"
    return path if filter_id is None else f"{path}/{filter_id}"


async def test_filter_upload_and_download(client: MatrixClient) -> None:
    alice = await client.register()
    body = {
        "room": {
            "timeline": {"limit": 10, "types": ["m.room.message"]},
            "state": {"lazy_load_members": True},
        },
        "event_fields": ["type", "content", "sender"],
    }
    created = (await client.request("POST", filter_path(alice), json=body, token=alice)).ok()
    filter_id = created["filter_id"]
    assert isinstance(filter_id, str) and not filter_id.startswith("{")
    fetched = await client.request("GET", filter_path(alice, filter_id), token=alice)
    assert fetched.ok() == body
    # The stored filter works as /sync's filter parameter.
    synced = await client.request(
        "GET", "sync", token=alice, params={"filter": filter_id, "timeout": "0"}
    )
    synced.ok()


async def test_filter_errors(client: MatrixClient) -> None:
    alice = await client.register()
    bob = await client.register()
    created = (await client.request("POST", filter_path(alice), json={}, token=alice)).ok()
    other = await client.request("GET", filter_path(alice, created["filter_id"]), token=bob)
    assert_error(other, 403, "M_FORBIDDEN")
    upload_for_other = await client.request("POST", filter_path(alice), json={}, token=bob)
    assert_error(upload_for_other, 403, "M_FORBIDDEN")
    unknown = await client.request("GET", filter_path(alice, "nope"), token=alice)
    assert_error(unknown, 404, "M_NOT_FOUND")
    path = filter_path(alice)
    bad_limit = {"room": {"timeline": {"limit": "ten"}}}
    assert_error(await client.request("POST", path, json=bad_limit, token=alice), 400, "M_BAD_JSON")
    bad_sender = {"room": {"timeline": {"senders": ["nobody"]}}}
    assert_error(
        await client.request("POST", path, json=bad_sender, token=alice), 400, "M_INVALID_PARAM"
    )
    assert_error(await client.request("POST", path, json=[1], token=alice), 400, "M_NOT_JSON")


async def test_room_rule_ids_are_taken_as_given(client: MatrixClient) -> None:
    """A room rule named by an alias (sytest's ``#spam:example.com``) is stored as Synapse
    stores it, and ordered among the other room rules."""
    alice = await client.register()
    first, second = quote("#a:example.com", safe=""), quote("#b:example.com", safe="")
    (await client.request("PUT", f"{RULES}/room/{first}", json={"actions": []}, token=alice)).ok()
    (await client.request("PUT", f"{RULES}/room/{second}", json={"actions": []}, token=alice)).ok()
    rooms = (await client.request("GET", f"{RULES}/room/", token=alice)).ok()
    assert [r["rule_id"] for r in rooms] == ["#b:example.com", "#a:example.com"]
    rule = (await client.request("GET", f"{RULES}/room/{first}", token=alice)).ok()
    assert rule == {"rule_id": "#a:example.com", "default": False, "enabled": True, "actions": []}


async def test_malformed_push_rule_paths_are_400(client: MatrixClient) -> None:
    """No scope, an unknown scope, a missing kind or rule ID or an unknown attribute is a
    malformed request (400 M_UNRECOGNIZED, as Synapse), for GET, PUT and DELETE alike."""
    alice = await client.register()
    paths = [
        "pushrules/not_a_scope/",
        "pushrules/not_a_scope/room/x",
        "pushrules/global",
        "pushrules/global/room",
        "pushrules/global/override/.m.rule.master/not_an_attr",
    ]
    for path in paths:
        got = await client.request("GET", path, token=alice)
        assert_error(got, 400, "M_UNRECOGNIZED")
    for path in [*paths, "pushrules/", "pushrules/global/room/"]:
        got = await client.request("PUT", path, json={"actions": []}, token=alice)
        assert_error(got, 400, "M_UNRECOGNIZED")
    assert_error(
        await client.request("DELETE", "pushrules/global", token=alice), 400, "M_UNRECOGNIZED"
    )
    # The well-formed paths still work, and the path without a trailing slash is unknown.
    assert (await client.request("GET", "pushrules/global/room/", token=alice)).ok() == []
    assert (await client.request("GET", "pushrules", token=alice)).status == 404
    assert (await client.request("GET", "pushrules/", token=None)).status == 401
