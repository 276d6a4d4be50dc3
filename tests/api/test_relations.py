"""Relations over HTTP on every backend (Client-Server API, "Forming relationships between
events"): ``GET /_matrix/client/v1/rooms/{roomId}/relations/...`` pages, filters, recursion
and visibility; bundled aggregations (``m.replace``, ``m.thread``, ``m.reference``) on
/event, /messages, /context and /sync; the checks made when a relation is sent; redacted
and purged children leaving the answers."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any
from urllib.parse import quote

from harness.admin import login_admin
from harness.client import Account, MatrixClient
from harness.rooms import create_room, say, shared_room
from harness.server import HomeserverProcess
from harness.sync import sync

V1 = "/_matrix/client/v1"
ADMIN = "/_peyvand/admin/v1"
DAY_MS = 86_400_000

_txn = itertools.count()


async def send(
    client: MatrixClient, room_id: str, account: Account, event_type: str, content: Any
) -> Any:
    """``account`` sends an event; the response (not checked)."""
    return await client.request(
        "PUT",
        f"rooms/{quote(room_id)}/send/{event_type}/rel{next(_txn)}",
        json=content,
        token=account,
    )


async def react(client: MatrixClient, room_id: str, account: Account, parent: str, key: str) -> str:
    relates = {"rel_type": "m.annotation", "event_id": parent, "key": key}
    event_id: str = (
        await send(client, room_id, account, "m.reaction", {"m.relates_to": relates})
    ).ok()["event_id"]
    return event_id


async def reply_in_thread(
    client: MatrixClient, room_id: str, account: Account, root: str, text: str
) -> str:
    return await say(
        client,
        room_id,
        account,
        text,
        **{"m.relates_to": {"rel_type": "m.thread", "event_id": root}},
    )


async def edit(
    client: MatrixClient, room_id: str, account: Account, original: str, text: str
) -> str:
    extra = {
        "m.new_content": {"msgtype": "m.text", "body": text},
        "m.relates_to": {"rel_type": "m.replace", "event_id": original},
    }
    return await say(client, room_id, account, f"* {text}", **extra)


async def relations(
    client: MatrixClient, account: Account, room_id: str, event_id: str, *path: str, **params: str
) -> Any:
    suffix = "".join(f"/{quote(p)}" for p in path)
    return await client.request(
        "GET",
        f"{V1}/rooms/{quote(room_id)}/relations/{quote(event_id)}{suffix}",
        token=account,
        params=params,
    )


def ids(chunk: list[dict[str, Any]]) -> list[str]:
    return [e["event_id"] for e in chunk]


async def test_25_reactions_page_both_ways(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    root = await say(client, room_id, alice, "react to me")
    reactions = [await react(client, room_id, bob, root, f"key {i}") for i in range(25)]

    seen: list[str] = []
    token: str | None = None
    pages = 0
    while pages < 10:
        params = {"limit": "10", **({"from": token} if token else {})}
        page = (await relations(client, alice, room_id, root, **params)).ok()
        pages += 1
        seen += ids(page["chunk"])
        if token is not None:
            assert page["prev_batch"] == token
        else:
            assert "prev_batch" not in page
        assert "recursion_depth" not in page
        token = page.get("next_batch")
        if token is None:
            break
    assert pages == 3
    assert seen == reactions[::-1]

    forwards: list[str] = []
    token = None
    for _ in range(10):
        params = {"limit": "7", "dir": "f", **({"from": token} if token else {})}
        page = (await relations(client, alice, room_id, root, **params)).ok()
        forwards += ids(page["chunk"])
        token = page.get("next_batch")
        if token is None:
            break
    assert forwards == reactions

    # A /messages token works as ``from``; ``to`` stops the page.
    messages = (
        await client.request(
            "GET", f"rooms/{quote(room_id)}/messages", token=alice, params={"limit": "5"}
        )
    ).ok()
    upto = (await relations(client, alice, room_id, root, **{"from": messages["start"]})).ok()
    assert ids(upto["chunk"]) == reactions[::-1][:5]
    # "a from token from page 1 and a to token from page 2" cover page 2 again.
    page1 = (await relations(client, alice, room_id, root, limit="3")).ok()
    page2_params = {"limit": "10", "from": page1["next_batch"]}
    page2 = (await relations(client, alice, room_id, root, **page2_params)).ok()
    assert ids(page2["chunk"]) == reactions[::-1][3:13]
    again_params = {"limit": "100", "from": page1["next_batch"], "to": page2["next_batch"]}
    again = (await relations(client, alice, room_id, root, **again_params)).ok()
    assert ids(again["chunk"]) == ids(page2["chunk"])
    assert "next_batch" not in again
    # The other way round is empty.
    backwards_params = {"from": page2["next_batch"], "to": page1["next_batch"]}
    assert (await relations(client, alice, room_id, root, **backwards_params)).ok()["chunk"] == []


async def test_rel_type_event_type_and_recurse(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    root = await say(client, room_id, alice, "root")
    reaction = await react(client, room_id, bob, root, "👍")
    reply = await reply_in_thread(client, room_id, bob, root, "in the thread")
    on_reply = await react(client, room_id, alice, reply, "👀")
    ref = await send(
        client,
        room_id,
        bob,
        "org.example.note",
        {"m.relates_to": {"rel_type": "m.reference", "event_id": root}},
    )
    reference = ref.ok()["event_id"]

    everything = (await relations(client, alice, room_id, root, limit="50")).ok()
    assert ids(everything["chunk"]) == [reference, reply, reaction]
    annotations = (await relations(client, alice, room_id, root, "m.annotation")).ok()
    assert ids(annotations["chunk"]) == [reaction]
    typed = (await relations(client, alice, room_id, root, "m.thread", "m.room.message")).ok()
    assert ids(typed["chunk"]) == [reply]
    none = (await relations(client, alice, room_id, root, "m.thread", "m.reaction")).ok()
    assert none["chunk"] == []

    deep = (await relations(client, alice, room_id, root, recurse="true", limit="50")).ok()
    assert ids(deep["chunk"]) == [reference, on_reply, reply, reaction]
    assert deep["recursion_depth"] >= 3
    # The filter applies at every level: the reaction on the reply hangs off a thread
    # event, not an annotation, so it is not reached.
    only = (await relations(client, alice, room_id, root, "m.annotation", recurse="true")).ok()
    assert ids(only["chunk"]) == [reaction]
    # Children carry their own bundled aggregations (the reply has no thread of its own,
    # but is served like any event).
    assert "m.relations" not in everything["chunk"][1].get("unsigned", {})


async def test_bad_requests_and_unknown_events(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    root = await say(client, room_id, alice, "root")
    for params in ({"limit": "-1"}, {"limit": "x"}, {"dir": "sideways"}, {"from": "nonsense"}):
        bad = await relations(client, alice, room_id, root, **params)
        assert bad.status == 400, (params, bad.body)
        assert bad.body["errcode"] == "M_INVALID_PARAM"
    bad = await relations(client, alice, room_id, root, recurse="perhaps")
    assert bad.status == 400
    for room, event in ((room_id, "$unknown"), ("!nowhere:localhost", root)):
        missing = await relations(client, alice, room, event)
        assert (missing.status, missing.body["errcode"]) == (404, "M_NOT_FOUND")
    # Someone outside a private room cannot tell that the event exists.
    private = await create_room(client, alice, preset="private_chat")
    secret = await say(client, private, alice, "secret")
    outsider = await relations(client, bob, private, secret)
    assert (outsider.status, outsider.body["errcode"]) == (404, "M_NOT_FOUND")


async def test_joined_visibility_hides_what_came_before_joining(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(
        client,
        alice,
        preset="public_chat",
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}
        ],
    )
    old = await say(client, room_id, alice, "before bob")
    await react(client, room_id, alice, old, "old")
    carol = await client.register()
    for member in (bob, carol):
        (await client.request("POST", f"join/{quote(room_id)}", json={}, token=member)).ok()
    hidden = await relations(client, bob, room_id, old)
    assert (hidden.status, hidden.body["errcode"]) == (404, "M_NOT_FOUND")
    new = await say(client, room_id, alice, "after bob")
    late = await react(client, room_id, alice, new, "new")
    assert ids((await relations(client, bob, room_id, new)).ok()["chunk"]) == [late]

    # A thread whose newest reply bob may not see shows him the newest one he may.
    seen_reply = await reply_in_thread(client, room_id, alice, new, "bob sees this")
    (await client.request("POST", f"rooms/{quote(room_id)}/leave", json={}, token=bob)).ok()
    await reply_in_thread(client, room_id, alice, new, "after bob left")
    after = await relations(client, bob, room_id, new, "m.thread")
    assert ids(after.ok()["chunk"]) == [seen_reply]
    served = await client.request("GET", f"rooms/{quote(room_id)}/event/{quote(new)}", token=bob)
    thread = served.ok()["unsigned"]["m.relations"]["m.thread"]
    assert thread["latest_event"]["event_id"] == seen_reply
    for_carol = await client.request(
        "GET", f"rooms/{quote(room_id)}/event/{quote(new)}", token=carol
    )
    assert for_carol.ok()["unsigned"]["m.relations"]["m.thread"]["count"] == 2


async def test_bundled_everywhere(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    carol = await client.register()
    (await client.request("POST", f"join/{quote(room_id)}", json={}, token=carol)).ok()
    root = await say(client, room_id, alice, "original")
    await edit(client, room_id, alice, root, "first edit")
    newest_edit = await edit(client, room_id, alice, root, "second edit")
    await edit(client, room_id, bob, root, "bob may not edit alice")
    reply = await reply_in_thread(client, room_id, bob, root, "reply")
    reply_edit = await edit(client, room_id, bob, reply, "reply, edited")
    reference = (
        await send(
            client,
            room_id,
            bob,
            "org.example.note",
            {"m.relates_to": {"rel_type": "m.reference", "event_id": root}},
        )
    ).ok()["event_id"]
    await say(client, room_id, alice, "later")

    def check(event: dict[str, Any], participated: bool) -> None:
        assert event["event_id"] == root
        assert event["content"]["body"] == "original"  # never replaced by the server
        bundle = event["unsigned"]["m.relations"]
        assert bundle["m.replace"]["event_id"] == newest_edit
        assert bundle["m.replace"]["content"]["m.new_content"]["body"] == "second edit"
        thread = bundle["m.thread"]
        assert thread["count"] == 1
        assert thread["current_user_participated"] is participated
        assert thread["latest_event"]["event_id"] == reply
        latest_edit = thread["latest_event"]["unsigned"]["m.relations"]["m.replace"]
        assert latest_edit["event_id"] == reply_edit
        assert bundle["m.reference"] == {"chunk": [{"event_id": reference}]}

    path = f"rooms/{quote(room_id)}"
    for account, participated in ((alice, True), (bob, True), (carol, False)):
        check(
            (await client.request("GET", f"{path}/event/{quote(root)}", token=account)).ok(),
            participated,
        )
    messages = (
        await client.request("GET", f"{path}/messages", token=carol, params={"limit": "50"})
    ).ok()
    check(next(e for e in messages["chunk"] if e["event_id"] == root), False)
    context = (await client.request("GET", f"{path}/context/{quote(root)}", token=alice)).ok()
    check(context["event"], True)
    timeline_filter = json.dumps({"room": {"timeline": {"limit": 50}}})
    synced = await sync(client, bob, filter=timeline_filter)
    events = synced["rooms"]["join"][room_id]["timeline"]["events"]
    check(next(e for e in events if e["event_id"] == root), True)
    # Edits and annotations get no aggregations of their own.
    edits = [e for e in events if e["event_id"] == newest_edit]
    assert "m.relations" not in edits[0]["unsigned"]


async def test_invalid_edits_ignored(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    original = await say(client, room_id, alice, "mine")
    await edit(client, room_id, bob, original, "not yours")
    no_new_content = await send(
        client,
        room_id,
        alice,
        "m.room.message",
        {
            "body": "*",
            "msgtype": "m.text",
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        },
    )
    no_new_content.ok()
    topic = (
        await client.request(
            "PUT", f"rooms/{quote(room_id)}/state/m.room.topic", json={"topic": "t"}, token=alice
        )
    ).ok()["event_id"]
    await edit(client, room_id, alice, topic, "topics cannot be edited")
    for event_id in (original, topic):
        served = await client.request(
            "GET", f"rooms/{quote(room_id)}/event/{quote(event_id)}", token=alice
        )
        assert "m.relations" not in served.ok()["unsigned"]


async def test_sending_bad_relations(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    other_room = await create_room(client, alice, preset="public_chat")
    elsewhere = await say(client, other_room, alice, "in another room")
    root = await say(client, room_id, alice, "root")

    cross = await send(
        client,
        room_id,
        alice,
        "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": elsewhere, "key": "x"}},
    )
    assert (cross.status, cross.body["errcode"]) == (400, "M_UNKNOWN")
    unknown = await send(
        client,
        room_id,
        alice,
        "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$nope", "key": "x"}},
    )
    assert (unknown.status, unknown.body["errcode"]) == (400, "M_UNKNOWN")
    no_key = await send(
        client,
        room_id,
        alice,
        "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": root}},
    )
    assert (no_key.status, no_key.body["errcode"]) == (400, "M_UNKNOWN")

    first = await react(client, room_id, bob, root, "👍")
    again = await send(
        client,
        room_id,
        bob,
        "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}},
    )
    assert (again.status, again.body["errcode"]) == (400, "M_DUPLICATE_ANNOTATION")
    await react(client, room_id, alice, root, "👍")  # another sender may
    redaction = await client.request(
        "PUT", f"rooms/{quote(room_id)}/redact/{quote(first)}/undo{next(_txn)}", json={}, token=bob
    )
    redaction.ok()
    await react(client, room_id, bob, root, "👍")  # once the first is redacted

    reply = await reply_in_thread(client, room_id, bob, root, "reply")
    nested = await send(
        client,
        room_id,
        alice,
        "m.room.message",
        {
            "body": "x",
            "msgtype": "m.text",
            "m.relates_to": {"rel_type": "m.thread", "event_id": reply},
        },
    )
    assert (nested.status, nested.body["errcode"]) == (400, "M_UNKNOWN")
    # A state event meets the same checks.
    state = await client.request(
        "PUT",
        f"rooms/{quote(room_id)}/state/org.example.state/k",
        json={"m.relates_to": {"rel_type": "m.reference", "event_id": elsewhere}},
        token=alice,
    )
    assert (state.status, state.body["errcode"]) == (400, "M_UNKNOWN")


async def test_redacted_children_leave(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    root = await say(client, room_id, alice, "root")
    reaction = await react(client, room_id, bob, root, "👍")
    kept_edit = await edit(client, room_id, alice, root, "kept")
    dropped_edit = await edit(client, room_id, alice, root, "dropped")
    first_reply = await reply_in_thread(client, room_id, bob, root, "first")
    second_reply = await reply_in_thread(client, room_id, bob, root, "second")

    async def redact(account: Account, event_id: str) -> None:
        response = await client.request(
            "PUT",
            f"rooms/{quote(room_id)}/redact/{quote(event_id)}/r{next(_txn)}",
            json={},
            token=account,
        )
        response.ok()

    for account, event_id in ((bob, reaction), (alice, dropped_edit), (bob, second_reply)):
        await redact(account, event_id)
    listed = (await relations(client, alice, room_id, root, limit="50")).ok()
    assert ids(listed["chunk"]) == [first_reply, kept_edit]
    served = (
        await client.request("GET", f"rooms/{quote(room_id)}/event/{quote(root)}", token=alice)
    ).ok()
    bundle = served["unsigned"]["m.relations"]
    assert bundle["m.replace"]["event_id"] == kept_edit
    assert bundle["m.thread"]["count"] == 1
    assert bundle["m.thread"]["latest_event"]["event_id"] == first_reply

    # A redacted original bundles no edit, and lists none.
    await redact(alice, root)
    after = (
        await client.request("GET", f"rooms/{quote(room_id)}/event/{quote(root)}", token=alice)
    ).ok()
    assert "m.replace" not in after["unsigned"].get("m.relations", {})
    assert ids((await relations(client, alice, room_id, root)).ok()["chunk"]) == [first_reply]


async def test_purged_children_leave(homeserver: HomeserverProcess, client: MatrixClient) -> None:
    admin = await login_admin(client, homeserver)
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(
        client,
        alice,
        preset="public_chat",
        initial_state=[{"type": "m.room.retention", "content": {"max_lifetime": DAY_MS}}],
    )
    (await client.request("POST", f"join/{quote(room_id)}", json={}, token=bob)).ok()
    hold = {"kind": "user", "target": alice.user_id, "case_id": "C-16", "reason": "keep root"}
    (await client.request("POST", f"{ADMIN}/legal_holds", json=hold, token=admin)).ok()
    root = await say(client, room_id, alice, "root, held")
    await react(client, room_id, bob, root, "👍")
    await reply_in_thread(client, room_id, bob, root, "purged reply")
    assert len((await relations(client, alice, room_id, root)).ok()["chunk"]) == 2
    await asyncio.sleep(0.01)
    boundary_ms = int(time.time() * 1000)
    run = await client.request(
        "POST",
        f"{ADMIN}/retention/run",
        json={"room_id": room_id, "now_ts": boundary_ms + DAY_MS},
        token=admin,
    )
    assert run.ok()["purged"]["events"] >= 2
    assert (await relations(client, alice, room_id, root)).ok()["chunk"] == []
    served = (
        await client.request("GET", f"rooms/{quote(room_id)}/event/{quote(root)}", token=alice)
    ).ok()
    assert "m.relations" not in served["unsigned"]


async def test_ignored_users_leave_the_thread_summary(client: MatrixClient) -> None:
    alice, bob, room_id = await shared_room(client)
    carol = await client.register()
    (await client.request("POST", f"join/{quote(room_id)}", json={}, token=carol)).ok()
    root = await say(client, room_id, alice, "root")
    mine = await reply_in_thread(client, room_id, carol, root, "carol's reply")
    await reply_in_thread(client, room_id, bob, root, "bob's reply")
    path = f"rooms/{quote(room_id)}/event/{quote(root)}"
    before = (await client.request("GET", path, token=carol)).ok()["unsigned"]["m.relations"]
    assert before["m.thread"]["count"] == 2
    ignore: dict[str, dict[str, Any]] = {"ignored_users": {bob.user_id: {}}}
    (
        await client.request(
            "PUT",
            f"user/{quote(carol.user_id)}/account_data/m.ignored_user_list",
            json=ignore,
            token=carol,
        )
    ).ok()
    after = (await client.request("GET", path, token=carol)).ok()["unsigned"]["m.relations"]
    assert after["m.thread"]["count"] == 1
    assert after["m.thread"]["latest_event"]["event_id"] == mine
    assert after["m.thread"]["current_user_participated"] is True
    listed = (await relations(client, carol, room_id, root)).ok()
    assert ids(listed["chunk"]) == [mine]
