"""What sliding sync sends of each room over HTTP (MSC4186 "Room response"): required
state with its wildcards, names and heroes, invites, leaves, and incremental answers
carrying only what is new to the connection; on every backend."""

from __future__ import annotations

from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.rooms import put_state, say
from harness.sliding_sync import create_room, join, one_list, sliding


def state_keys(room: dict[str, object]) -> set[tuple[str, str]]:
    events = room.get("required_state", [])
    assert isinstance(events, list)
    return {(e["type"], e["state_key"]) for e in events}


async def test_required_state_wildcards_and_me(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat", name="N", topic="T")
    await join(client, bob, room_id)
    lists = one_list(
        timeline_limit=0,
        required_state=[["m.room.member", "$ME"], ["m.room.name", "*"], ["*", ""]],
    )
    room = (await sliding(client, bob, {"lists": lists}))["rooms"][room_id]
    keys = state_keys(room)
    assert ("m.room.member", bob.user_id) in keys
    assert ("m.room.member", alice.user_id) not in keys
    assert {("m.room.name", ""), ("m.room.topic", ""), ("m.room.create", "")} <= keys
    everything = one_list(timeline_limit=0, required_state=[["*", "*"]])
    room = (await sliding(client, bob, {"lists": everything}))["rooms"][room_id]
    assert ("m.room.member", alice.user_id) in state_keys(room)


async def test_lazy_members_are_the_timeline_senders_sent_once(client: MatrixClient) -> None:
    alice, bob, carol = [await client.register() for _ in range(3)]
    room_id = await create_room(client, alice, preset="public_chat", name="Lazy")
    await join(client, bob, room_id)
    await join(client, carol, room_id)
    await say(client, room_id, bob, "from bob")
    lazy = {"lists": one_list(timeline_limit=1, required_state=[["m.room.member", "$LAZY"]])}
    first = await sliding(client, carol, lazy)
    assert state_keys(first["rooms"][room_id]) == {("m.room.member", bob.user_id)}
    await say(client, room_id, bob, "bob again")
    await say(client, room_id, alice, "from alice")
    second = await sliding(client, carol, lazy, first["pos"])
    room = second["rooms"][room_id]
    assert [e["content"]["body"] for e in room["timeline"]] == ["from alice"]
    # Bob's member event was sent already; Alice's is new.
    assert state_keys(room) == {("m.room.member", alice.user_id)}


async def test_a_widened_required_state_sends_what_is_missing(client: MatrixClient) -> None:
    alice = await client.register()
    room_id = await create_room(client, alice, name="Wide", topic="Topic")
    narrow = {"lists": one_list(timeline_limit=1, required_state=[["m.room.name", ""]])}
    first = await sliding(client, alice, narrow)
    assert state_keys(first["rooms"][room_id]) == {("m.room.name", "")}
    wide = {
        "lists": one_list(
            timeline_limit=1, required_state=[["m.room.name", ""], ["m.room.topic", ""]]
        )
    }
    second = await sliding(client, alice, wide, first["pos"])
    room = second["rooms"][room_id]
    assert "initial" not in room and "timeline" not in room
    assert state_keys(room) == {("m.room.topic", "")}
    # A changed state event is sent again, a same one not.
    await put_state(client, alice, room_id, "m.room.topic", {"topic": "New"})
    third = await sliding(client, alice, wide, second["pos"])
    room = third["rooms"][room_id]
    assert state_keys(room) == {("m.room.topic", "")}
    assert room["required_state"][0]["content"] == {"topic": "New"}


async def test_an_unnamed_room_has_heroes(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    path = f"profile/{quote(bob.user_id)}/displayname"
    (await client.request("PUT", path, json={"displayname": "Bob"}, token=bob)).ok()
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, bob, room_id)
    room = (await sliding(client, alice, {"lists": one_list()}))["rooms"][room_id]
    assert "name" not in room
    assert room["heroes"] == [{"user_id": bob.user_id, "displayname": "Bob"}]
    assert room["joined_count"] == 2
    # $LAZY brings the timeline senders' members only, not the heroes' (as Synapse).
    lazy = one_list(timeline_limit=1, required_state=[["m.room.member", "$LAZY"]])
    await say(client, room_id, alice, "hi")
    room = (await sliding(client, alice, {"lists": lazy}))["rooms"][room_id]
    assert state_keys(room) == {("m.room.member", alice.user_id)}


async def set_displayname(client: MatrixClient, account: Account, name: str) -> None:
    path = f"profile/{quote(account.user_id)}/displayname"
    (await client.request("PUT", path, json={"displayname": name}, token=account)).ok()


async def test_heroes_are_the_first_members_in_stream_order(client: MatrixClient) -> None:
    """ "The first 5 members of the room, ordered by stream ordering, which are joined or
    invited" (``m.heroes``), the joined before the invited as Synapse: the order they
    joined, not their user IDs'; the same in /sync's summary. A hero's profile change
    makes their member event the newest (last among the joined heroes), and the heroes
    are sent again with the new display name."""
    alice = await client.register()
    others = sorted([await client.register() for _ in range(3)], key=lambda a: a.user_id)
    # Joined in the reverse of their IDs' order, the first of them only invited.
    joining, invited = others[:0:-1], others[0]
    room_id = await create_room(client, alice, preset="public_chat")
    for account in joining:
        await join(client, account, room_id)
    (
        await client.request(
            "POST",
            f"rooms/{quote(room_id)}/invite",
            json={"user_id": invited.user_id},
            token=alice,
        )
    ).ok()
    expected = [a.user_id for a in (*joining, invited)]
    first = await sliding(client, alice, {"lists": one_list()})
    assert [h["user_id"] for h in first["rooms"][room_id]["heroes"]] == expected
    summary = (await client.request("GET", "sync", token=alice)).ok()["rooms"]["join"][room_id]
    assert summary["summary"]["m.heroes"] == expected

    await set_displayname(client, joining[0], "Renamed")
    room = (await sliding(client, alice, {"lists": one_list()}, first["pos"]))["rooms"][room_id]
    heroes = room["heroes"]
    renamed = [joining[1], joining[0], invited]
    assert [h["user_id"] for h in heroes] == [a.user_id for a in renamed]
    assert heroes[1]["displayname"] == "Renamed"


async def test_lazy_members_include_the_targets_of_member_events(client: MatrixClient) -> None:
    """``$LAZY`` sends the member events of the timeline's senders and of the users its
    member events are about (an invite's invitee), as Synapse."""
    alice, bob, dave = [await client.register() for _ in range(3)]
    room_id = await create_room(client, alice, preset="public_chat", name="Targets")
    await join(client, bob, room_id)
    lazy = {"lists": one_list(timeline_limit=1, required_state=[["m.room.member", "$LAZY"]])}
    first = await sliding(client, alice, lazy)
    assert state_keys(first["rooms"][room_id]) == {("m.room.member", bob.user_id)}
    (
        await client.request(
            "POST", f"rooms/{quote(room_id)}/invite", json={"user_id": dave.user_id}, token=bob
        )
    ).ok()
    room = (await sliding(client, alice, lazy, first["pos"]))["rooms"][room_id]
    assert [e["type"] for e in room["timeline"]] == ["m.room.member"]
    assert state_keys(room) == {("m.room.member", dave.user_id)}


async def test_a_subscription_shows_a_room_left_up_to_the_leave(client: MatrixClient) -> None:
    """As Synapse: a room the user left themselves, and did not forget, is answered to a
    subscription (it is in no list): its timeline up to the leave. Forgotten, nothing."""
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, bob, preset="public_chat", name="Old")
    await join(client, alice, room_id)
    await say(client, room_id, bob, "before")
    (await client.request("POST", f"rooms/{quote(room_id)}/leave", json={}, token=alice)).ok()
    await say(client, room_id, bob, "after")
    body = {"room_subscriptions": {room_id: {"timeline_limit": 5, "required_state": []}}}

    room = (await sliding(client, alice, body))["rooms"][room_id]
    timeline = room["timeline"]
    assert [e["content"].get("body") for e in timeline][-2:-1] == ["before"]
    assert (timeline[-1]["type"], timeline[-1]["content"]["membership"]) == (
        "m.room.member",
        "leave",
    )
    assert room["initial"] is True

    (await client.request("POST", f"rooms/{quote(room_id)}/forget", json={}, token=alice)).ok()
    assert room_id not in (await sliding(client, alice, body))["rooms"]


async def test_an_invite_shows_its_stripped_state_then_its_room(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, name="Invited", invite=[bob.user_id])
    first = await sliding(client, bob, {"lists": one_list()})
    room = first["rooms"][room_id]
    assert room["initial"] is True and room["name"] == "Invited"
    stripped = {(e["type"], e["state_key"]) for e in room["invite_state"]}
    assert ("m.room.member", bob.user_id) in stripped and ("m.room.name", "") in stripped
    assert "timeline" not in room
    await join(client, bob, room_id)
    second = await sliding(client, bob, {"lists": one_list()}, first["pos"])
    joined = second["rooms"][room_id]
    assert joined["initial"] is True and "invite_state" not in joined
    assert joined["timeline"][-1]["type"] == "m.room.member"


async def test_a_left_room_ends_at_the_leave(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, bob, room_id)
    first = await sliding(client, bob, {"lists": one_list()})
    (await client.request("POST", f"rooms/{quote(room_id)}/leave", json={}, token=bob)).ok()
    await say(client, room_id, alice, "after bob left")
    second = await sliding(client, bob, {"lists": one_list()}, first["pos"])
    room = second["rooms"][room_id]
    timeline = room["timeline"]
    assert timeline[-1]["type"] == "m.room.member"
    assert timeline[-1]["content"]["membership"] == "leave"
    assert all(e["content"].get("body") != "after bob left" for e in timeline)
    # Once told, the left room drops out of the list.
    third = await sliding(client, bob, {"lists": one_list()}, second["pos"])
    assert third["lists"]["all"]["count"] == 0


async def test_a_room_left_after_it_was_sent_gets_only_the_leave(client: MatrixClient) -> None:
    """As Synapse: the connection holds the room, so the leave is what is new (not
    ``initial``, no name, no state but what changed)."""
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat", name="Leaving")
    await join(client, bob, room_id)
    await say(client, room_id, alice, "stay?")
    lists = one_list(timeline_limit=3, required_state=[["m.room.name", ""]])
    first = await sliding(client, bob, {"lists": lists})
    (await client.request("POST", f"rooms/{quote(room_id)}/leave", json={}, token=bob)).ok()
    room = (await sliding(client, bob, {"lists": lists}, first["pos"]))["rooms"][room_id]
    assert "initial" not in room and "name" not in room and "required_state" not in room
    assert [e["content"].get("membership") for e in room["timeline"]] == ["leave"]
    assert room["limited"] is False


async def test_bump_stamp_is_sent_only_when_it_moved(client: MatrixClient) -> None:
    """A state event moves the room up the list (its newest event) but not its
    ``bump_stamp`` (its newest message), which is then left out, as Synapse."""
    alice = await client.register()
    chatty = await create_room(client, alice, name="Chatty")
    await say(client, chatty, alice, "hello")
    renamed = await create_room(client, alice, name="Before")
    await say(client, chatty, alice, "again")
    first = await sliding(client, alice, {"lists": one_list(0, timeline_limit=1)})
    assert first["lists"]["all"]["ops"][0]["room_ids"] == [chatty]
    stamp = first["rooms"][chatty]["bump_stamp"]
    await put_state(client, alice, renamed, "m.room.name", {"name": "After"})
    second = await sliding(client, alice, {"lists": one_list(timeline_limit=1)}, first["pos"])
    assert second["lists"]["all"]["ops"][0]["room_ids"] == [renamed, chatty]
    # New to the connection: sent with its bump_stamp (its create event's position).
    assert second["rooms"][renamed]["bump_stamp"] < stamp
    await put_state(client, alice, chatty, "m.room.topic", {"topic": "T"})
    third = await sliding(client, alice, {"lists": one_list(timeline_limit=1)}, second["pos"])
    assert "bump_stamp" not in third["rooms"][chatty]
    await say(client, chatty, alice, "news")
    fourth = await sliding(client, alice, {"lists": one_list(timeline_limit=1)}, third["pos"])
    assert fourth["rooms"][chatty]["bump_stamp"] > stamp


async def test_an_unchanged_room_is_not_sent_again(client: MatrixClient) -> None:
    alice = await client.register()
    quiet = await create_room(client, alice)
    busy = await create_room(client, alice)
    first = await sliding(client, alice, {"lists": one_list()})
    await say(client, busy, alice, "news")
    second = await sliding(client, alice, {"lists": one_list()}, first["pos"])
    assert list(second["rooms"]) == [busy]
    assert quiet not in second["rooms"]


async def test_a_kicked_room_stays_in_the_list(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, bob, room_id)
    first = await sliding(client, bob, {"lists": one_list()})
    kick = {"user_id": bob.user_id, "reason": "out"}
    (await client.request("POST", f"rooms/{quote(room_id)}/kick", json=kick, token=alice)).ok()
    second = await sliding(client, bob, {"lists": one_list()}, first["pos"])
    assert second["rooms"][room_id]["timeline"][-1]["content"]["membership"] == "leave"
    # Unlike a room the user left, a kick stays in view.
    third = await sliding(client, bob, {"lists": one_list()}, second["pos"])
    assert third["lists"]["all"]["ops"][0]["room_ids"] == [room_id]
    assert room_id not in third["rooms"]


async def test_a_knock_shows_its_stripped_state(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, name="Door")
    await put_state(client, alice, room_id, "m.room.join_rules", {"join_rule": "knock"})
    (await client.request("POST", f"knock/{quote(room_id)}", json={}, token=bob)).ok()
    room = (await sliding(client, bob, {"lists": one_list()}))["rooms"][room_id]
    assert room["name"] == "Door"
    knocked = {(e["type"], e["state_key"]) for e in room["knock_state"]}
    assert ("m.room.member", bob.user_id) in knocked


async def test_a_longer_timeline_limit_expands_the_timeline(client: MatrixClient) -> None:
    alice = await client.register()
    room_id = await create_room(client, alice)
    for text in ("1", "2", "3"):
        await say(client, room_id, alice, text)
    first = await sliding(client, alice, {"lists": one_list(timeline_limit=1)})
    assert [e["content"]["body"] for e in first["rooms"][room_id]["timeline"]] == ["3"]
    subscription = {room_id: {"timeline_limit": 3, "required_state": []}}
    body = {"lists": one_list(timeline_limit=1), "room_subscriptions": subscription}
    second = await sliding(client, alice, body, first["pos"])
    room = second["rooms"][room_id]
    assert room["unstable_expanded_timeline"] is True
    assert [e["content"]["body"] for e in room["timeline"]] == ["1", "2", "3"]
    # Served once: the same request then has nothing new.
    third = await sliding(client, alice, body, second["pos"])
    assert third["rooms"] == {}


async def test_unread_counts_count_notifications_and_highlights(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, bob, room_id)
    await say(client, room_id, alice, "plain")
    await say(client, room_id, alice, "hey", **{"m.mentions": {"user_ids": [bob.user_id]}})
    room = (await sliding(client, bob, {"lists": one_list()}))["rooms"][room_id]
    assert room["notification_count"] == 2
    assert room["highlight_count"] == 1


async def test_unread_thread_notifications_split_the_counts_where_asked(
    client: MatrixClient,
) -> None:
    """MSC3773's ``unread_thread_notifications`` in a room config (as in /sync's filter):
    the main timeline's counts, and each thread's by its root; without it, one count."""
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, bob, room_id)
    root = await say(client, room_id, alice, "root")
    thread = {"rel_type": "m.thread", "event_id": root}
    await say(client, room_id, alice, "in thread", **{"m.relates_to": thread})
    mention = {"m.mentions": {"user_ids": [bob.user_id]}}
    await say(client, room_id, alice, "hey", **{"m.relates_to": thread}, **mention)

    whole = (await sliding(client, bob, {"lists": one_list()}))["rooms"][room_id]
    assert (whole["notification_count"], whole["highlight_count"]) == (3, 1)
    assert "unread_thread_notifications" not in whole

    lists = one_list()
    lists["all"]["unread_thread_notifications"] = True
    split = (await sliding(client, bob, {"lists": lists}))["rooms"][room_id]
    assert (split["notification_count"], split["highlight_count"]) == (1, 0)
    assert split["unread_thread_notifications"] == {
        root: {"notification_count": 2, "highlight_count": 1}
    }
    # A subscription asking for them wins over a list that does not.
    subscribed = {
        "lists": one_list(),
        "room_subscriptions": {
            room_id: {
                "timeline_limit": 1,
                "required_state": [],
                "unread_thread_notifications": True,
            }
        },
    }
    room = (await sliding(client, bob, subscribed))["rooms"][room_id]
    assert room["unread_thread_notifications"][root]["notification_count"] == 2


async def test_a_tombstoned_room_stays_listed_beside_its_successor(client: MatrixClient) -> None:
    alice = await client.register()
    old = await create_room(client, alice, name="Old")
    upgraded = await client.request(
        "POST", f"rooms/{quote(old)}/upgrade", json={"new_version": "11"}, token=alice
    )
    new = upgraded.ok()["replacement_room"]
    lists = one_list(required_state=[["m.room.tombstone", ""], ["m.room.create", ""]])
    body = await sliding(client, alice, {"lists": lists})
    assert set(body["lists"]["all"]["ops"][0]["room_ids"]) == {old, new}
    tombstone = state_keys(body["rooms"][old])
    assert ("m.room.tombstone", "") in tombstone


async def test_name_and_avatar_are_sent_again_only_when_they_change(
    client: MatrixClient,
) -> None:
    alice = await client.register()
    room_id = await create_room(client, alice, name="Named")
    await put_state(client, alice, room_id, "m.room.avatar", {"url": "mxc://test/one"})
    first = await sliding(client, alice, {"lists": one_list()})
    room = first["rooms"][room_id]
    assert (room["name"], room["avatar"]) == ("Named", "mxc://test/one")
    await put_state(client, alice, room_id, "m.room.avatar", {"url": "mxc://test/two"})
    room = (await sliding(client, alice, {"lists": one_list()}, first["pos"]))["rooms"][room_id]
    assert room["avatar"] == "mxc://test/two"
    assert "name" not in room and "joined_count" not in room


async def test_a_room_back_in_view_gets_what_it_missed_not_initial(client: MatrixClient) -> None:
    alice = await client.register()
    first_room = await create_room(client, alice)
    second_room = await create_room(client, alice)
    top = {"lists": {"top": {"ranges": [[0, 0]], "timeline_limit": 5, "required_state": []}}}
    shown = await sliding(client, alice, top)
    assert list(shown["rooms"]) == [second_room]
    await say(client, first_room, alice, "first up")
    moved = await sliding(client, alice, top, shown["pos"])
    assert moved["rooms"][first_room]["initial"] is True
    await say(client, second_room, alice, "missed one")
    await say(client, second_room, alice, "missed two")
    back = await sliding(client, alice, top, moved["pos"])
    room = back["rooms"][second_room]
    assert "initial" not in room
    assert [e["content"]["body"] for e in room["timeline"]] == ["missed one", "missed two"]


async def test_bundled_aggregations_only_on_a_limited_timeline(client: MatrixClient) -> None:
    """As Synapse: an event's ``m.relations`` come on a ``limited`` timeline, where the
    client may lack the related events, and not on one it holds whole."""
    alice = await client.register()
    room_id = await create_room(client, alice, name="Edits")
    edits = {"lists": one_list(timeline_limit=5)}
    first = await sliding(client, alice, edits)
    original = await say(client, room_id, alice, "first")
    replacement = {
        "m.new_content": {"msgtype": "m.text", "body": "edited"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": original},
    }
    await say(client, room_id, alice, "* edited", **replacement)
    second = (await sliding(client, alice, edits, first["pos"]))["rooms"][room_id]
    assert second["limited"] is False
    assert [e["content"]["body"] for e in second["timeline"]] == ["first", "* edited"]
    assert "m.relations" not in second["timeline"][0]["unsigned"]
    limited = {"lists": one_list(timeline_limit=2)}
    fresh = (await sliding(client, alice, limited))["rooms"][room_id]
    assert fresh["limited"] is True
    assert [e["content"]["body"] for e in fresh["timeline"]] == ["first", "* edited"]
    bundle = fresh["timeline"][0]["unsigned"]["m.relations"]
    assert bundle["m.replace"]["content"]["m.new_content"]["body"] == "edited"
