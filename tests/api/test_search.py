"""Server-side search (Client-Server API, "Server Side Search", ``POST /search``) against
a running server, on every backend: English and Persian words found, 200 results paged
with ``next_batch``, only events the searcher may see, nothing left after a redaction, a
purge or an erasure, both orders, groupings, context with profiles, filters, and hostile
or malformed requests answered without a 500."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from harness.admin import login_admin
from harness.client import Account, MatrixClient
from harness.database import query
from harness.rooms import create_room, say
from harness.server import HomeserverProcess

ADMIN = "/_peyvand/admin/v1"
DAY_MS = 86_400_000
_txn = itertools.count(1)


async def _search(
    client: MatrixClient,
    account: Account,
    term: str,
    *,
    next_batch: str | None = None,
    status: int = 200,
    **criteria: Any,
) -> dict[str, Any]:
    """The ``room_events`` answer to ``term`` with ``criteria`` (or the error body)."""
    response = await client.request(
        "POST",
        "search",
        json={"search_categories": {"room_events": {"search_term": term, **criteria}}},
        token=account,
        params={"next_batch": next_batch} if next_batch is not None else None,
    )
    assert response.status == status, response.body
    if status != 200:
        return dict(response.body)
    return dict(response.body["search_categories"]["room_events"])


def _ids(answer: dict[str, Any]) -> list[str]:
    return [r["result"]["event_id"] for r in answer["results"]]


async def _all_pages(
    client: MatrixClient, account: Account, term: str, **criteria: Any
) -> list[str]:
    """Event IDs of every page of ``term`` (at most 100 pages)."""
    found: list[str] = []
    next_batch = None
    for _ in range(100):
        answer = await _search(client, account, term, next_batch=next_batch, **criteria)
        found += _ids(answer)
        next_batch = answer.get("next_batch")
        if next_batch is None:
            return found
    raise AssertionError("more than 100 pages")


async def _set_state(
    client: MatrixClient, account: Account, room_id: str, event_type: str, content: Any
) -> str:
    path = f"rooms/{room_id}/state/{event_type}/"
    return str((await client.request("PUT", path, json=content, token=account)).ok()["event_id"])


async def test_english_and_persian_words_are_found(client: MatrixClient) -> None:
    alice = await client.register()
    room_id = await create_room(client, alice)
    fox = await say(client, room_id, alice, "The quick brown Fox jumps")
    # "Hello world, I read the books" (a zero-width non-joiner inside "books").
    persian = await say(client, room_id, alice, "سلام دنیا، کتاب\u200cها را خواندم")  # noqa: RUF001
    await say(client, room_id, alice, "nothing to see")

    answer = await _search(client, alice, "fox")
    assert _ids(answer) == [fox]
    assert answer["count"] == 1
    assert "fox" in answer["highlights"]
    assert answer["results"][0]["result"]["content"]["body"] == "The quick brown Fox jumps"
    assert answer["results"][0]["result"]["room_id"] == room_id
    # Case folded, and a word's beginning matches it.
    assert _ids(await _search(client, alice, "QUICK bro")) == [fox]
    assert _ids(await _search(client, alice, "کتاب")) == [persian]
    assert _ids(await _search(client, alice, "خواندم سلام")) == [persian]
    # An Arabic kaf and yeh find the Persian letters.
    assert _ids(await _search(client, alice, "كتاب")) == [persian]
    # Every term must match.
    assert _ids(await _search(client, alice, "fox سلام")) == []


async def test_short_terms_match_whole_words_only(client: MatrixClient) -> None:
    """A term of one or two characters is a whole word, not a prefix of most of the
    index; from three characters on a term also matches the words it begins."""
    alice = await client.register()
    room_id = await create_room(client, alice)
    long_word = await say(client, room_id, alice, "tapestry")
    short_word = await say(client, room_id, alice, "ta da")

    assert _ids(await _search(client, alice, "t")) == []
    assert _ids(await _search(client, alice, "ta")) == [short_word]
    assert (await _search(client, alice, "ta"))["count"] == 1
    assert _ids(await _search(client, alice, "tap")) == [long_word]
    assert _ids(await _search(client, alice, "d ta")) == []
    assert _ids(await _search(client, alice, "da ta")) == [short_word]


async def test_two_hundred_results_page_through_next_batch(client: MatrixClient) -> None:
    alice = await client.register()
    room_id = await create_room(client, alice)
    sent: list[str] = []
    for start in range(0, 200, 20):
        sent += await asyncio.gather(
            *(say(client, room_id, alice, f"needle number {i}") for i in range(start, start + 20))
        )

    found = await _all_pages(client, alice, "needle", order_by="recent", filter={"limit": 50})
    assert len(found) == len(set(found)) == 200
    assert set(found) == set(sent)
    by_position = await _all_pages(client, alice, "needle", order_by="recent", filter={"limit": 64})
    assert len(by_position) == 200
    first = await _search(client, alice, "needle", order_by="recent", filter={"limit": 5})
    assert first["count"] == 200
    assert len(first["results"]) == 5
    second = await _search(
        client, alice, "needle", order_by="recent", filter={"limit": 5},
        next_batch=first["next_batch"],
    )  # fmt: skip
    assert second["count"] == 200
    assert not set(_ids(first)) & set(_ids(second))


async def test_rank_answers_one_page_and_limit_zero_no_next_batch(client: MatrixClient) -> None:
    """As Synapse, ``rank`` has no ``next_batch`` (an offset into a ranking that new
    messages change would repeat or skip results); a ``limit`` of 0 shows nothing and
    gives no ``next_batch`` either, rather than the same token forever."""
    alice = await client.register()
    room_id = await create_room(client, alice)
    for i in range(6):
        await say(client, room_id, alice, f"gecko {i}")

    ranked = await _search(client, alice, "gecko", order_by="rank", filter={"limit": 2})
    assert len(ranked["results"]) == 2
    assert ranked["count"] == 6
    assert "next_batch" not in ranked
    grouped = await _search(
        client, alice, "gecko", order_by="rank", filter={"limit": 2},
        groupings={"group_by": [{"key": "room_id"}]},
    )  # fmt: skip
    assert "next_batch" not in grouped["groups"]["room_id"][room_id]

    recent = await _search(client, alice, "gecko", order_by="recent", filter={"limit": 2})
    token = recent["next_batch"]
    for _ in range(2):
        empty = await _search(
            client, alice, "gecko", order_by="recent", filter={"limit": 0}, next_batch=token
        )
        assert empty["results"] == []
        assert "next_batch" not in empty
    first = await _search(client, alice, "gecko", order_by="recent", filter={"limit": 0})
    assert (first["results"], first["count"]) == ([], 6)
    assert "next_batch" not in first


async def test_never_shows_what_the_searcher_cannot_see(client: MatrixClient) -> None:
    alice, bob, carol = await client.register(), await client.register(), await client.register()
    room_id = await create_room(
        client,
        alice,
        preset="public_chat",
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}
        ],
    )
    await say(client, room_id, alice, "zebra before bob joined")
    (await client.request("POST", f"join/{room_id}", json={}, token=bob)).ok()
    seen = await say(client, room_id, alice, "zebra while bob is here")

    assert _ids(await _search(client, bob, "zebra")) == [seen]
    assert _ids(await _search(client, carol, "zebra")) == []
    # Asking for the room by name shows no more.
    assert _ids(await _search(client, bob, "zebra", filter={"rooms": [room_id]})) == [seen]
    (await client.request("POST", f"rooms/{room_id}/leave", json={}, token=bob)).ok()
    await say(client, room_id, alice, "zebra after bob left")
    # A room left is not searched at all (as Synapse).
    assert _ids(await _search(client, bob, "zebra")) == []
    assert len(_ids(await _search(client, alice, "zebra"))) == 3


async def test_rooms_left_answer_nothing_not_even_a_count(client: MatrixClient) -> None:
    """Only joined rooms are searched (as Synapse): a knock withdrawn, an invitation
    refused or a kick leaves a ``leave`` membership, and ``count`` (read before history
    visibility) must not tell a word's presence in a room the user cannot read."""
    alice, eve, bob, kicked = [await client.register() for _ in range(4)]
    knock_room = await create_room(
        client,
        alice,
        preset="private_chat",
        room_version="10",
        initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}],
    )
    await say(client, knock_room, alice, "acme before the knock")
    (await client.request("POST", f"knock/{knock_room}", json={}, token=eve)).ok()
    (await client.request("POST", f"rooms/{knock_room}/leave", json={}, token=eve)).ok()

    invite_room = await create_room(client, alice, preset="private_chat")
    await say(client, invite_room, alice, "acme in the invite room")
    body = {"user_id": bob.user_id}
    (await client.request("POST", f"rooms/{invite_room}/invite", json=body, token=alice)).ok()
    (await client.request("POST", f"rooms/{invite_room}/leave", json={}, token=bob)).ok()

    kick_room = await create_room(client, alice, preset="public_chat")
    (await client.request("POST", f"join/{kick_room}", json={}, token=kicked)).ok()
    await say(client, kick_room, alice, "acme while kicked is here")
    body = {"user_id": kicked.user_id}
    (await client.request("POST", f"rooms/{kick_room}/kick", json=body, token=alice)).ok()
    for room_id in (knock_room, invite_room, kick_room):
        await say(client, room_id, alice, "acme after they left")

    for account in (eve, bob, kicked):
        for term in ("acme", "ac", "acm", "after"):
            answer = await _search(client, account, term)
            assert (answer["count"], answer["results"]) == (0, []), (account.user_id, term)
    assert (await _search(client, alice, "acme"))["count"] == 6


async def test_nothing_found_after_a_redaction(
    client: MatrixClient, homeserver: HomeserverProcess
) -> None:
    alice = await client.register()
    room_id = await create_room(client, alice)
    secret = await say(client, room_id, alice, "ephemeral walrus")
    assert _ids(await _search(client, alice, "walrus")) == [secret]

    path = f"rooms/{room_id}/redact/{secret}/t{next(_txn)}"
    (await client.request("PUT", path, json={}, token=alice)).ok()
    assert _ids(await _search(client, alice, "walrus")) == []
    rows = await query(homeserver, "SELECT key FROM event_search WHERE event_id = $1", secret)
    assert rows == []


async def test_nothing_found_after_a_purge(
    client: MatrixClient, homeserver: HomeserverProcess
) -> None:
    admin = await login_admin(client, homeserver)
    alice = await client.register()
    room_id = await create_room(
        client,
        alice,
        initial_state=[{"type": "m.room.retention", "content": {"max_lifetime": DAY_MS}}],
    )
    old = await say(client, room_id, alice, "purgeable narwhal")
    await _set_state(client, alice, room_id, "m.room.topic", {"topic": "narwhal topic"})
    await _set_state(client, alice, room_id, "m.room.topic", {"topic": "current topic"})
    assert len(_ids(await _search(client, alice, "narwhal"))) == 2

    run = {"now_ts": int(time.time() * 1000) + 2 * DAY_MS, "reason": "test", "room_id": room_id}
    report = (await client.request("POST", f"{ADMIN}/retention/run", json=run, token=admin)).ok()
    assert report["purged"]["events"] >= 2
    assert _ids(await _search(client, alice, "narwhal")) == []
    rows = await query(homeserver, "SELECT event_id FROM event_search WHERE room_id = $1", room_id)
    assert old not in {r[0] for r in rows}
    assert _ids(await _search(client, alice, "current")) != []


async def test_nothing_found_after_erasure(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    (await client.request("POST", f"join/{room_id}", json={}, token=bob)).ok()
    erased = await say(client, room_id, bob, "erasable pangolin")
    assert _ids(await _search(client, alice, "pangolin")) == [erased]

    first = await client.request("POST", "account/deactivate", json={"erase": True}, token=bob)
    assert first.status == 401, first.body
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": bob.user_id},
        "password": bob.password,
        "session": first.body["session"],
    }
    done = await client.request(
        "POST", "account/deactivate", json={"erase": True, "auth": auth}, token=bob
    )
    done.ok()
    assert _ids(await _search(client, alice, "pangolin")) == []


async def test_rank_and_recent_orders_and_groupings(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    first_room = await create_room(client, alice, preset="public_chat")
    second_room = await create_room(client, alice, preset="public_chat")
    for room_id in (first_room, second_room):
        (await client.request("POST", f"join/{room_id}", json={}, token=bob)).ok()
    strong = await say(client, first_room, alice, "mango mango mango")
    weak = await say(
        client,
        second_room,
        bob,
        "mango and a long sentence about many other things that are not fruit at all",
    )

    recent = await _search(client, alice, "mango", order_by="recent")
    assert _ids(recent) == [weak, strong]
    ranked = await _search(client, alice, "mango", order_by="rank")
    assert _ids(ranked) == [strong, weak]
    assert ranked["results"][0]["rank"] > ranked["results"][1]["rank"]

    grouped = await _search(
        client,
        alice,
        "mango",
        order_by="rank",
        groupings={"group_by": [{"key": "room_id"}, {"key": "sender"}]},
    )
    groups = grouped["groups"]
    assert groups["room_id"][first_room]["results"] == [strong]
    assert groups["room_id"][second_room]["results"] == [weak]
    assert groups["sender"][alice.user_id]["results"] == [strong]
    assert groups["sender"][bob.user_id]["results"] == [weak]
    assert isinstance(groups["room_id"][first_room]["order"], int | float)


async def test_room_group_next_batch_continues_in_its_room(client: MatrixClient) -> None:
    alice = await client.register()
    first_room, second_room = await create_room(client, alice), await create_room(client, alice)
    in_first = [await say(client, first_room, alice, f"quokka {i}") for i in range(3)]
    await say(client, second_room, alice, "quokka elsewhere")

    answer = await _search(
        client,
        alice,
        "quokka",
        order_by="recent",
        filter={"limit": 2},
        groupings={"group_by": [{"key": "room_id"}]},
    )
    group = answer["groups"]["room_id"][first_room]
    rest = await _search(
        client,
        alice,
        "quokka",
        order_by="recent",
        next_batch=group["next_batch"],
        filter={"limit": 10},
    )
    assert set(group["results"]) | set(_ids(rest)) == set(in_first)
    assert {r["result"]["room_id"] for r in rest["results"]} == {first_room}


async def test_context_with_profiles_and_state(client: MatrixClient) -> None:
    alice = await client.register()
    (
        await client.request(
            "PUT", f"profile/{alice.user_id}/displayname", json={"displayname": "Alice A"},
            token=alice,
        )
    ).ok()  # fmt: skip
    room_id = await create_room(client, alice, name="Context room")
    before = await say(client, room_id, alice, "first line")
    match = await say(client, room_id, alice, "the axolotl line")
    after = await say(client, room_id, alice, "last line")

    answer = await _search(
        client,
        alice,
        "axolotl",
        event_context={"before_limit": 1, "after_limit": 1, "include_profile": True},
        include_state=True,
    )
    (result,) = answer["results"]
    assert result["result"]["event_id"] == match
    context = result["context"]
    assert [e["event_id"] for e in context["events_before"]] == [before]
    assert [e["event_id"] for e in context["events_after"]] == [after]
    assert context["profile_info"][alice.user_id]["displayname"] == "Alice A"
    assert context["start"] and context["end"]
    state_types = {e["type"] for e in answer["state"][room_id]}
    assert {"m.room.create", "m.room.name", "m.room.member"} <= state_types


async def test_context_is_bounded_for_the_whole_response(client: MatrixClient) -> None:
    """100 results asking 50 events on each side would be 10,000 context events: each
    side is cut so the response holds at most 500, and what is shown stays right."""
    alice = await client.register()
    room_id = await create_room(client, alice)
    sent: list[str] = []
    for start in range(0, 150, 25):
        sent += await asyncio.gather(
            *(say(client, room_id, alice, f"heron {i}") for i in range(start, start + 25))
        )
    timeline = [
        e["event_id"]
        for e in (
            await client.request(
                "GET", f"rooms/{room_id}/messages", params={"dir": "b", "limit": "1000"},
                token=alice,
            )
        ).ok()["chunk"]
    ][::-1]  # fmt: skip

    answer = await _search(
        client,
        alice,
        "heron",
        order_by="recent",
        filter={"limit": 100},
        event_context={"before_limit": 50, "after_limit": 50, "include_profile": True},
    )
    assert len(answer["results"]) == 100
    total = 0
    for result in answer["results"]:
        context = result["context"]
        before = [e["event_id"] for e in context["events_before"]]
        after = [e["event_id"] for e in context["events_after"]]
        total += len(before) + len(after)
        assert len(before) <= 50 and len(after) <= 50
        at = timeline.index(result["result"]["event_id"])
        assert before == timeline[at - len(before) : at][::-1]
        assert after == timeline[at + 1 : at + 1 + len(after)]
        assert alice.user_id in context["profile_info"]
    assert 100 < total <= 500


async def test_filters_and_keys(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    other_room = await create_room(client, alice)
    (await client.request("POST", f"join/{room_id}", json={}, token=bob)).ok()
    by_alice = await say(client, room_id, alice, "ocelot from alice")
    by_bob = await say(client, room_id, bob, "ocelot from bob")
    elsewhere = await say(client, other_room, alice, "ocelot elsewhere")
    topic = await _set_state(client, alice, room_id, "m.room.topic", {"topic": "ocelot topic"})
    name = await _set_state(client, alice, room_id, "m.room.name", {"name": "Ocelot name"})
    # Encrypted events are never indexed, whatever they carry.
    encrypted = (
        await client.request(
            "PUT",
            f"rooms/{room_id}/send/m.room.encrypted/t{next(_txn)}",
            json={"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "ocelot", "body": "ocelot"},
            token=alice,
        )
    ).ok()["event_id"]

    everything = set(_ids(await _search(client, alice, "ocelot", filter={"limit": 50})))
    assert everything == {by_alice, by_bob, elsewhere, topic, name}
    assert encrypted not in everything
    assert set(_ids(await _search(client, alice, "ocelot", filter={"senders": [bob.user_id]}))) == {
        by_bob
    }
    assert by_bob not in _ids(
        await _search(client, alice, "ocelot", filter={"not_senders": [bob.user_id]})
    )
    assert _ids(await _search(client, alice, "ocelot", filter={"types": ["m.room.topic"]})) == [
        topic
    ]
    assert set(
        _ids(await _search(client, alice, "ocelot", filter={"not_types": ["m.room.message"]}))
    ) == {topic, name}
    assert _ids(await _search(client, alice, "ocelot", keys=["content.name"])) == [name]
    assert _ids(await _search(client, alice, "ocelot", filter={"rooms": [other_room]})) == [
        elsewhere
    ]
    assert elsewhere not in _ids(
        await _search(client, alice, "ocelot", filter={"not_rooms": [other_room]})
    )


async def test_hostile_search_terms_are_plain_words(client: MatrixClient) -> None:
    alice = await client.register()
    room_id = await create_room(client, alice)
    plain = await say(client, room_id, alice, "tapir AND NOT OR near tapir")
    hostile = [
        '"',
        '"tapir',
        "tapir*",
        "tapir:*",
        "tapir & | ! ( ) <-> '",
        "NEAR(tapir near, 2)",
        "tapir OR",
        "-tapir",
        "body:tapir",
        "'); DROP TABLE events; --",
        "*",
        "",
        "   ",
        "\u200c\u0640",
        " ".join(f"w{i}" for i in range(10_000)),
        "tapir " * 10_000,
    ]
    for term in hostile:
        answer = await _search(client, alice, term)
        assert isinstance(answer["results"], list), term
    assert _ids(await _search(client, alice, "NEAR(tapir near)")) == [plain]
    assert _ids(await _search(client, alice, '"tapir')) == [plain]
    assert _ids(await _search(client, alice, "tapir " * 10_000)) == [plain]


async def test_malformed_requests_are_refused(client: MatrixClient) -> None:
    alice = await client.register()
    await create_room(client, alice)
    for body, errcode in (
        ({}, "M_MISSING_PARAM"),
        ({"search_categories": {}}, "M_INVALID_PARAM"),
        ({"search_categories": {"people": {"search_term": "x"}}}, "M_INVALID_PARAM"),
        ({"search_categories": {"room_events": {}}}, "M_MISSING_PARAM"),
        ({"search_categories": {"room_events": {"search_term": 5}}}, "M_BAD_JSON"),
        (
            {"search_categories": {"room_events": {"search_term": "x", "order_by": "old"}}},
            "M_INVALID_PARAM",
        ),
        (
            {"search_categories": {"room_events": {"search_term": "x", "keys": ["content.x"]}}},
            "M_INVALID_PARAM",
        ),
        (
            {
                "search_categories": {
                    "room_events": {"search_term": "x", "groupings": {"group_by": [{"key": "x"}]}}
                }
            },
            "M_INVALID_PARAM",
        ),
        (
            {
                "search_categories": {
                    "room_events": {"search_term": "x", "event_context": {"before_limit": -1}}
                }
            },
            "M_INVALID_PARAM",
        ),
        (
            {"search_categories": {"room_events": {"search_term": "x", "filter": {"limit": "a"}}}},
            "M_BAD_JSON",
        ),
    ):
        response = await client.request("POST", "search", json=body, token=alice)
        assert response.status == 400, (body, response.body)
        assert response.body["errcode"] == errcode, (body, response.body)
    # Not base64, not JSON, [1, 2, 3], ["rank", -5, null, null], ["recent", 5, null, -1].
    bad_tokens = (
        "garbage",
        "!!!",
        "é",
        "WzEsMiwzXQ",
        "WyJyYW5rIiwtNSxudWxsLG51bGxd",
        "WyJyZWNlbnQiLDUsbnVsbCwtMV0",
    )
    for token in bad_tokens:
        answer = await _search(client, alice, "x", next_batch=token, status=400)
        assert answer["errcode"] == "M_INVALID_PARAM", token
    # A token of the other order.
    room_id = await create_room(client, alice)
    for i in range(3):
        await say(client, room_id, alice, f"kiwi {i}")
    page = await _search(client, alice, "kiwi", order_by="recent", filter={"limit": 1})
    answer = await _search(
        client, alice, "kiwi", order_by="rank", next_batch=page["next_batch"], status=400
    )
    assert answer["errcode"] == "M_INVALID_PARAM"
