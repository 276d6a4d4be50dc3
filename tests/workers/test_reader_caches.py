"""What a client reader keeps in memory follows the writer's changes (issue 21,
"Caches"): right after a write answered by the event writer, a read answered by the
reader (behind the same nginx) sees it, although the reader had cached the value before.
A revoked access token is refused at once (the writer answers the logout once the
invalidation is sent); the other caches are dropped within milliseconds of the write
(polled for at most a second here)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.appservice import write_registration
from harness.deployment import WRITER_ROLES, Deployment, behind_nginx
from harness.nginx import Nginx

PASSWORD = "a long password"
SLIDING_SYNC = "/_matrix/client/unstable/org.matrix.simplified_msc3575"


@pytest.fixture
def front(deployed: tuple[Nginx, Deployment]) -> Nginx:
    """The session's deployment (tests/workers/conftest.py) as clients reach it."""
    return deployed[0]


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base
        self.token = ""
        self.user_id = ""

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        status: int = 200,
        worker: str | None = None,
        api: str = "/_matrix/client/v3",
        **params: str,
    ) -> dict[str, Any]:
        """The answer of a request that must get ``status`` from ``worker`` (if given)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(
            method, f"{self.base}{api}{path}", json=body, params=params,
            headers=headers, timeout=aiohttp.ClientTimeout(total=30),
        ) as response:  # fmt: skip
            answer: dict[str, Any] = await response.json()
            assert response.status == status, (method, path, response.status, answer)
            if worker is not None:
                assert response.headers["X-Peyvand-Worker"] == worker, (method, path)
            return answer

    async def register(self, name: str) -> None:
        body = {"username": name, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
        answer = await self.call("POST", "/register", body)
        self.token, self.user_id = answer["access_token"], answer["user_id"]

    async def login(self, name: str) -> None:
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": name},
            "password": PASSWORD,
        }
        answer = await self.call("POST", "/login", body)
        self.token, self.user_id = answer["access_token"], answer["user_id"]

    def password_auth(self) -> dict[str, Any]:
        return {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": self.user_id},
            "password": PASSWORD,
        }


async def test_a_token_revoked_on_the_writer_is_refused_by_the_reader_at_once(
    front: Nginx, session: aiohttp.ClientSession
) -> None:
    alice = Client(session, front.base_url)
    await alice.register("tok_alice")
    # A second session, used (so cached) on the reader, then logged out on the writer.
    second = Client(session, front.base_url)
    await second.login("tok_alice")
    for _ in range(3):
        await second.call("GET", "/account/whoami", worker="reader")
    await second.call("POST", "/logout", {}, worker="writer")
    refused = await second.call("GET", "/account/whoami", status=401, worker="reader")
    assert refused["errcode"] == "M_UNKNOWN_TOKEN"
    await alice.call("GET", "/account/whoami", worker="reader")  # the other session stays

    # A deactivated account's tokens: every one of them.
    for _ in range(3):
        await alice.call("GET", "/account/whoami", worker="reader")
    await alice.call("POST", "/account/deactivate", {"auth": alice.password_auth()})
    refused = await alice.call("GET", "/account/whoami", status=401, worker="reader")
    assert refused["errcode"] == "M_UNKNOWN_TOKEN"


async def _soon(read: Callable[[], Awaitable[object]], expected: object) -> None:
    """``read()`` answers ``expected`` within a second (the bus's invalidation)."""
    got = None
    for _ in range(20):  # bounded: 1 s
        got = await read()
        if got == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{got!r} != {expected!r}")


async def _room_with(alice: Client, bob: Client) -> str:
    """A room alice created and bob joined, which bob's sync on the reader shows."""
    created = await alice.call("POST", "/createRoom", {"invite": [bob.user_id]})
    room_id = str(created["room_id"])
    await bob.call("POST", f"/rooms/{room_id}/join", {})
    for _ in range(50):  # bounded: 5 s
        sync = await bob.call("GET", "/sync", worker="reader")
        if room_id in sync["rooms"]["join"]:
            return room_id
        await asyncio.sleep(0.1)
    raise AssertionError("the reader never saw bob join")


async def _unread(bob: Client, room_id: str) -> int:
    sync = await bob.call("GET", "/sync", worker="reader")
    room = sync["rooms"]["join"].get(room_id, {})
    return int(room.get("unread_notifications", {}).get("notification_count", 0))


async def test_unread_counts_and_push_rules_follow_the_writer(
    front: Nginx, session: aiohttp.ClientSession
) -> None:
    alice, bob = Client(session, front.base_url), Client(session, front.base_url)
    await alice.register("unread_alice")
    await bob.register("unread_bob")
    room_id = await _room_with(alice, bob)
    body = {"msgtype": "m.text", "body": "hello"}
    sent = await alice.call("PUT", f"/rooms/{room_id}/send/m.room.message/u1", body)
    for _ in range(50):  # bounded: 5 s; each sync also keeps bob's read position
        if await _unread(bob, room_id) == 1:
            break
        await asyncio.sleep(0.1)
    assert await _unread(bob, room_id) == 1

    # A read receipt on the writer: the reader counts from it at once.
    await bob.call(
        "POST", f"/rooms/{room_id}/receipt/m.read/{sent['event_id']}", {}, worker="writer"
    )
    await _soon(lambda: _unread(bob, room_id), 0)

    # A push rule added on the writer: the reader's /pushrules has it at once.
    rule = f"/pushrules/global/room/{room_id}"
    await bob.call("GET", rule, status=404, worker="reader")
    await bob.call("PUT", rule, {"actions": []}, worker="writer")

    async def room_rules() -> list[str]:
        rules = await bob.call("GET", "/pushrules/", worker="reader")
        return [r["rule_id"] for r in rules["global"]["room"]]

    await _soon(room_rules, [room_id])
    answer = await bob.call("GET", rule, worker="reader")
    assert answer["rule_id"] == room_id and answer["actions"] == []


async def test_ignored_users_and_key_counts_follow_the_writer(
    front: Nginx, session: aiohttp.ClientSession
) -> None:
    alice, bob = Client(session, front.base_url), Client(session, front.base_url)
    await alice.register("ignore_alice")
    await bob.register("ignore_bob")
    room_id = await _room_with(alice, bob)
    body = {"msgtype": "m.text", "body": "hello"}
    await alice.call("PUT", f"/rooms/{room_id}/send/m.room.message/i1", body)

    async def senders() -> set[str]:
        page = await bob.call("GET", f"/rooms/{room_id}/messages", worker="reader", dir="b")
        return {e["sender"] for e in page["chunk"] if e["type"] == "m.room.message"}

    for _ in range(50):  # bounded: 5 s
        if await senders() == {alice.user_id}:
            break
        await asyncio.sleep(0.1)
    assert await senders() == {alice.user_id}
    ignored: dict[str, Any] = {"ignored_users": {alice.user_id: {}}}
    await bob.call(
        "PUT", f"/user/{bob.user_id}/account_data/m.ignored_user_list", ignored, worker="writer"
    )
    await _soon(senders, set())

    # One-time keys claimed on the writer: the reader's /sync counts what is left.
    whoami = await bob.call("GET", "/account/whoami")
    keys = {"one_time_keys": {"curve25519:a": "ka", "curve25519:b": "kb"}}
    await bob.call("POST", "/keys/upload", keys, worker="writer")

    async def count() -> int:
        sync = await bob.call("GET", "/sync", worker="reader")
        return int(sync["device_one_time_keys_count"].get("curve25519", 0))

    await _soon(count, 2)
    claim = {"one_time_keys": {bob.user_id: {whoami["device_id"]: "curve25519"}}}
    claimed = await alice.call("POST", "/keys/claim", claim, worker="writer")
    assert claimed["one_time_keys"][bob.user_id]
    await _soon(count, 1)


async def test_device_list_changes_made_on_the_writer_reach_the_readers_sync(
    front: Nginx, session: aiohttp.ClientSession
) -> None:
    """The reader's log of device list changes lacks the writer's: an incremental /sync
    on the reader lists alice once she logs in a new device on the writer."""
    alice, bob = Client(session, front.base_url), Client(session, front.base_url)
    await alice.register("devices_alice")
    await bob.register("devices_bob")
    await _room_with(alice, bob)
    since = (await bob.call("GET", "/sync", worker="reader"))["next_batch"]
    await Client(session, front.base_url).login("devices_alice")

    async def changed() -> list[str]:
        sync = await bob.call("GET", "/sync", worker="reader", since=since)
        return list(sync.get("device_lists", {}).get("changed", []))

    await _soon(changed, [alice.user_id])


AS_TOKEN = "as-token-of-the-reader-caches-bridge"


@pytest.fixture
def bridged(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Nginx]:
    """A deployment of its own, with an application service registered (no URL: it
    receives nothing) whose users are ``@as_*``."""
    registration = write_registration(
        tmp_path / "bridge.yaml", appservice_id="bridge", url=None, as_token=AS_TOKEN,
        hs_token="hs-token", sender_localpart="as_bot", user_regex="@as_.*",
    )  # fmt: skip
    roles = {"writer": WRITER_ROLES, "reader": ["client_reader"]}
    options = {"app_service_config_files": f'["{registration}"]'}
    with behind_nginx(request, tmp_path, roles, options=options) as (nginx, _):
        yield nginx


async def test_an_appservice_cannot_act_on_the_reader_as_a_user_deactivated_on_the_writer(
    bridged: Nginx, session: aiohttp.ClientSession
) -> None:
    bridge = Client(session, bridged.base_url)
    bridge.token = AS_TOKEN
    body = {"type": "m.login.application_service", "username": "as_bob", "inhibit_login": True}
    user_id = (await bridge.call("POST", "/register", body, worker="writer"))["user_id"]
    for _ in range(3):  # the reader keeps as_bob as active
        whoami = await bridge.call("GET", "/account/whoami", worker="reader", user_id=user_id)
        assert whoami["user_id"] == user_id
    await bridge.call("POST", "/account/deactivate", {}, worker="writer", user_id=user_id)
    refused = await bridge.call(
        "GET", "/account/whoami", status=403, worker="reader", user_id=user_id
    )
    assert refused["errcode"] == "M_USER_DEACTIVATED"


async def test_sliding_sync_counts_follow_a_receipt_on_the_writer(
    front: Nginx, session: aiohttp.ClientSession
) -> None:
    """Sliding sync keeps each room's counts between requests (``unread_counts.py``):
    a receipt stored on the writer drops them on the reader too."""
    alice, bob = Client(session, front.base_url), Client(session, front.base_url)
    await alice.register("sliding_alice")
    await bob.register("sliding_bob")
    room_id = await _room_with(alice, bob)
    body = {"msgtype": "m.text", "body": "hello"}
    sent = await alice.call("PUT", f"/rooms/{room_id}/send/m.room.message/s1", body)

    async def counts() -> int:
        window = {"ranges": [[0, 9]], "timeline_limit": 1, "required_state": []}
        request = {"lists": {"all": window}}
        answer = await bob.call(
            "POST", "/sync", request, worker="reader", api=SLIDING_SYNC, timeout="0"
        )
        return int(answer["rooms"].get(room_id, {}).get("notification_count", 0))

    await _soon(counts, 1)
    assert await counts() == 1  # kept
    receipt = f"/rooms/{room_id}/receipt/m.read/{sent['event_id']}"
    await bob.call("POST", receipt, {}, worker="writer")
    await _soon(counts, 0)


async def test_sliding_sync_leaves_out_a_room_forgotten_on_the_writer(
    front: Nginx, session: aiohttp.ClientSession
) -> None:
    alice, bob = Client(session, front.base_url), Client(session, front.base_url)
    await alice.register("forget_alice")
    await bob.register("forget_bob")
    room_id = await _room_with(alice, bob)
    # A room the user was kicked from stays listed until forgotten (their own leave
    # does not).
    await alice.call("POST", f"/rooms/{room_id}/kick", {"user_id": bob.user_id})

    async def listed() -> dict[str, Any]:
        window = {"ranges": [[0, 9]], "timeline_limit": 1, "required_state": []}
        request = {"lists": {"all": window}}
        answer = await bob.call(
            "POST", "/sync", request, worker="reader", api=SLIDING_SYNC, timeout="0"
        )
        return dict(answer["rooms"])

    async def left_room_listed() -> bool:
        return room_id in await listed()

    async def kicked() -> bool:
        with_leaves = '{"room": {"include_leave": true}}'
        sync = await bob.call("GET", "/sync", worker="reader", filter=with_leaves)
        return room_id in sync["rooms"]["leave"]

    await _soon(kicked, True)
    assert await left_room_listed()
    await bob.call("POST", f"/rooms/{room_id}/forget", {}, worker="writer")
    await _soon(left_room_listed, False)
