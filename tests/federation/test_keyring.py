"""Keyring: fetching, checking and caching other servers' keys; signature checks with them
(Server-Server API, "Retrieving server keys", "Request Authentication", "Validating hashes
and signatures on received events").

The network is a fake ``KeyFetcher`` of in-memory servers, each with its own signing keys;
the store is a real SQLite database.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from peyvand.events.signing import (
    SigningKey,
    generate_signing_key,
    get_verify_key,
    key_id,
    sign_json,
    verify_json_signature,
    verify_key_base64,
)
from peyvand.federation.keyring import MAX_KEY_VALIDITY_MS, NEGATIVE_CACHE_MS, Keyring
from peyvand.federation.request_auth import authorization_header, parse_authorization
from peyvand.federation.transport import KEY_QUERY_PATH, KEY_SERVER_PATH
from peyvand.storage.migrations import run_migrations
from peyvand.storage.server_keys import ServerKeyStore
from peyvand.storage.sqlite import SqliteDatabase
from peyvand.types import JsonDict, ServerName

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS
LOCAL = ServerName("local.example")
REMOTE = ServerName("remote.example")
NOTARY = ServerName("notary.example")
OTHER_NOTARY = ServerName("notary2.example")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def ms(self) -> int:
        return int(self.now * 1000)

    def advance_ms(self, ms: int) -> None:
        self.now += ms / 1000


class FakeServer:
    """A remote homeserver publishing its keys, optionally a notary for others."""

    def __init__(self, name: ServerName, clock: Clock, network: FakeNetwork) -> None:
        self.name = name
        self.clock = clock
        self.network = network
        self.key = generate_signing_key("a1")
        self.old: dict[str, tuple[SigningKey, int]] = {}
        self.validity_ms = DAY_MS
        self.reachable = True
        # Replaces the honest answer to GET /_matrix/key/v2/server.
        self.respond: Callable[[], Any] | None = None
        # The notary's answer to POST /_matrix/key/v2/query (None: not a notary).
        self.answer_query: Callable[[JsonDict], list[JsonDict]] | None = None

    def rotate(self, version: str) -> SigningKey:
        """Retire the current key (expired now) for a new one; the old key is returned."""
        old = self.key
        self.old[key_id(old)] = (old, self.clock.ms())
        self.key = generate_signing_key(version)
        return old

    def document(self) -> JsonDict:
        return self.sign(
            {
                "server_name": self.name,
                "verify_keys": {key_id(self.key): {"key": verify_key_base64(self.key)}},
                "old_verify_keys": {
                    kid: {"key": verify_key_base64(key), "expired_ts": ts}
                    for kid, (key, ts) in self.old.items()
                },
                "valid_until_ts": self.clock.ms() + self.validity_ms,
            }
        )

    def sign(self, obj: JsonDict, key: SigningKey | None = None) -> JsonDict:
        return sign_json(obj, self.name, key or self.key)

    def be_honest_notary(self) -> None:
        """Relay the current documents of the servers asked about, signed by this one."""

        def answer(body: JsonDict) -> list[JsonDict]:
            return [
                self.sign(self.network.servers[name].document())
                for name in body["server_keys"]
                if name in self.network.servers
            ]

        self.answer_query = answer


class FakeNetwork:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.servers: dict[str, FakeServer] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.bodies: list[Any] = []
        # When set, GETs wait for it (to hold fetches in flight).
        self.gate: asyncio.Event | None = None

    def add(self, name: ServerName) -> FakeServer:
        server = FakeServer(name, self.clock, self)
        self.servers[name] = server
        return server

    def gets(self, destination: str) -> int:
        return self.calls.count(("GET", destination, KEY_SERVER_PATH))

    def posts(self, destination: str) -> int:
        return self.calls.count(("POST", destination, KEY_QUERY_PATH))

    async def get_server_keys(self, destination: str) -> Any:
        self.calls.append(("GET", destination, KEY_SERVER_PATH))
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        server = self.servers.get(destination)
        if server is None or not server.reachable:
            raise ConnectionError(f"{destination} unreachable")
        return server.respond() if server.respond is not None else server.document()

    async def query_server_keys(self, destination: str, body: JsonDict) -> Any:
        self.calls.append(("POST", destination, KEY_QUERY_PATH))
        self.bodies.append(body)
        await asyncio.sleep(0)
        server = self.servers.get(destination)
        if server is None or not server.reachable or server.answer_query is None:
            raise ConnectionError(f"{destination} does not answer key queries")
        return {"server_keys": server.answer_query(body)}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def network(clock: Clock) -> FakeNetwork:
    return FakeNetwork(clock)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ServerKeyStore]:
    db = await SqliteDatabase.open(str(tmp_path / "keys.db"))
    try:
        await run_migrations(db)
        yield ServerKeyStore(db)
    finally:
        await db.close()


@pytest.fixture
def local_key() -> SigningKey:
    return generate_signing_key("local1")


@pytest.fixture
def make_keyring(
    local_key: SigningKey, store: ServerKeyStore, network: FakeNetwork, clock: Clock
) -> Callable[..., Keyring]:
    def make(*notaries: ServerName) -> Keyring:
        return Keyring(
            LOCAL,
            local_key,
            store,
            network,
            trusted_key_servers=notaries,
            key_validity_period_ms=DAY_MS,
            clock=clock,
        )

    return make


@pytest.fixture
def keyring(make_keyring: Callable[..., Keyring]) -> Keyring:
    return make_keyring()


async def verifies(keyring: Keyring, server: ServerName, obj: JsonDict, ts: int) -> bool:
    """Whether ``server`` signed ``obj`` with a key the ring finds valid until at least
    ``ts``: the check each received event gets."""
    (result,) = await keyring.verify_event_signatures([(server, obj, ts)])
    return result


def event(
    server: FakeServer, ts: int, body: str = "hello", *, key: SigningKey | None = None
) -> JsonDict:
    """A (redacted-form) event signed by ``server`` with ``key`` (default: its current one)."""
    return server.sign(
        {
            "type": "m.room.message",
            "room_id": "!room:remote.example",
            "sender": f"@u:{server.name}",
            "origin": server.name,
            "origin_server_ts": ts,
            "content": {"body": body},
        },
        key,
    )


# -- fetching from the server itself ---------------------------------------------------


async def test_keys_are_fetched_from_the_server_itself(
    keyring: Keyring, network: FakeNetwork, clock: Clock
) -> None:
    remote = network.add(REMOTE)
    assert await verifies(keyring, REMOTE, event(remote, clock.ms()), clock.ms())
    assert network.calls == [("GET", REMOTE, KEY_SERVER_PATH)]


async def test_cached_keys_are_not_fetched_again(
    keyring: Keyring,
    make_keyring: Callable[..., Keyring],
    network: FakeNetwork,
    clock: Clock,
) -> None:
    remote = network.add(REMOTE)
    assert await verifies(keyring, REMOTE, event(remote, clock.ms()), clock.ms())
    clock.advance_ms(HOUR_MS)
    assert await verifies(keyring, REMOTE, event(remote, clock.ms()), clock.ms())
    assert network.gets(REMOTE) == 1
    # A new key ring (a restart) finds the key in the database.
    restarted = make_keyring()
    assert await verifies(restarted, REMOTE, event(remote, clock.ms()), clock.ms())
    assert network.gets(REMOTE) == 1


async def test_an_expired_key_is_fetched_again(
    keyring: Keyring, network: FakeNetwork, clock: Clock
) -> None:
    remote = network.add(REMOTE)
    remote.validity_ms = HOUR_MS
    assert await verifies(keyring, REMOTE, event(remote, clock.ms()), clock.ms())
    clock.advance_ms(2 * HOUR_MS)
    # The server renews the key's validity when asked again.
    assert await verifies(keyring, REMOTE, event(remote, clock.ms()), clock.ms())
    assert network.gets(REMOTE) == 2


async def test_a_batch_refetches_for_its_latest_event(
    keyring: Keyring, network: FakeNetwork, clock: Clock
) -> None:
    remote = network.add(REMOTE)
    remote.validity_ms = HOUR_MS
    start = clock.ms()
    assert await verifies(keyring, REMOTE, event(remote, start), start)
    clock.advance_ms(HOUR_MS + HOUR_MS // 2)
    # The cached key covers the older event but not the newer one, wherever it is.
    late, early = start + 2 * HOUR_MS, start
    results = await keyring.verify_event_signatures(
        [(REMOTE, event(remote, late), late), (REMOTE, event(remote, early), early)]
    )
    assert results == [True, True]
    assert network.gets(REMOTE) == 2


async def test_a_key_that_stays_expired_is_not_returned(
    keyring: Keyring, network: FakeNetwork, clock: Clock
) -> None:
    remote = network.add(REMOTE)
    remote.validity_ms = HOUR_MS
    # An event from the key's validity verifies; one after it does not.
    early = event(remote, clock.ms() + HOUR_MS - 1)
    late = event(remote, clock.ms() + HOUR_MS + 1000)
    assert await keyring.verify_event_signatures([(REMOTE, early, clock.ms() + HOUR_MS - 1)]) == [
        True
    ]
    remote.reachable = False
    assert await keyring.verify_event_signatures(
        [(REMOTE, early, clock.ms() + HOUR_MS - 1), (REMOTE, late, clock.ms() + HOUR_MS + 1000)]
    ) == [True, False]
    later = clock.ms() + 2 * HOUR_MS
    assert not await verifies(keyring, REMOTE, event(remote, later), later)


async def test_valid_until_ts_is_capped_at_seven_days(
    keyring: Keyring, network: FakeNetwork, clock: Clock
) -> None:
    remote = network.add(REMOTE)
    remote.validity_ms = 365 * DAY_MS
    fetched = clock.ms()
    assert await verifies(keyring, REMOTE, event(remote, fetched), fetched)
    at_cap = fetched + MAX_KEY_VALIDITY_MS
    assert await verifies(keyring, REMOTE, event(remote, at_cap), at_cap)
    assert network.gets(REMOTE) == 1
    # Beyond the cap the key must be fetched again: the server's year is not trusted.
    remote.reachable = False
    assert not await verifies(keyring, REMOTE, event(remote, at_cap + 1), at_cap + 1)
    assert network.gets(REMOTE) == 2


async def test_old_verify_keys_verify_events_from_before_they_expired(
    keyring: Keyring, network: FakeNetwork, clock: Clock
) -> None:
    remote = network.add(REMOTE)
    before = event(remote, clock.ms() - 1000)
    clock.advance_ms(10)
    expired_at = clock.ms()
    old_key = remote.rotate("a2")
    # Signed with the old key after it expired.
    after = event(remote, expired_at + 1, key=old_key)
    current = event(remote, expired_at + 1)

    results = await keyring.verify_event_signatures(
        [
            (REMOTE, before, clock.ms() - 1000),
            (REMOTE, after, expired_at + 1),
            (REMOTE, current, expired_at + 1),
        ]
    )
    assert results == [True, False, True]
    assert network.gets(REMOTE) == 1
    # Old keys verify events, not requests made now.
    later = clock.ms() + 1
    assert not await verifies(keyring, REMOTE, event(remote, later, key=old_key), later)


async def test_a_response_for_another_server_name_is_rejected(
    keyring: Keyring, network: FakeNetwork, clock: Clock
) -> None:
    remote = network.add(REMOTE)
    remote.respond = lambda: remote.sign({**remote.document(), "server_name": "evil.example"})
    event_json = event(remote, clock.ms())
    assert not await verifies(keyring, REMOTE, event_json, clock.ms())
    assert network.gets(REMOTE) == 1


async def test_a_response_with_a_bad_signature_is_rejected(
    keyring: Keyring, network: FakeNetwork, clock: Clock
) -> None:
    remote = network.add(REMOTE)

    def tampered() -> JsonDict:
        document = remote.document()
        document["valid_until_ts"] += 1  # after signing
        return document

    remote.respond = tampered
    assert not await verifies(keyring, REMOTE, event(remote, clock.ms()), clock.ms())


async def test_a_response_not_signed_with_a_listed_key_is_rejected(
    keyring: Keyring, network: FakeNetwork, clock: Clock
) -> None:
    remote = network.add(REMOTE)
    stranger = generate_signing_key("zz")

    def signed_by_unlisted_key() -> JsonDict:
        document = remote.document()
        del document["signatures"]
        return remote.sign(document, stranger)

    remote.respond = signed_by_unlisted_key
    assert not await verifies(keyring, REMOTE, event(remote, clock.ms()), clock.ms())


# -- notaries ------------------------------------------------------------------------


async def test_notaries_are_asked_when_the_server_is_unreachable(
    make_keyring: Callable[..., Keyring], network: FakeNetwork, clock: Clock
) -> None:
    remote = network.add(REMOTE)
    network.add(NOTARY).be_honest_notary()
    keyring = make_keyring(NOTARY)
    remote.reachable = False
    kid = key_id(remote.key)

    assert await verifies(keyring, REMOTE, event(remote, clock.ms()), clock.ms())
    assert network.gets(REMOTE) == 1
    assert network.posts(NOTARY) == 1
    # The query asks for the key ID needed and how long it must be valid; the notary's
    # own key comes from the notary itself.
    assert network.bodies == [
        {"server_keys": {REMOTE: {kid: {"minimum_valid_until_ts": clock.ms()}}}}
    ]
    assert network.gets(NOTARY) == 1


async def test_a_failing_notary_is_skipped_for_the_next(
    make_keyring: Callable[..., Keyring], network: FakeNetwork, clock: Clock
) -> None:
    remote = network.add(REMOTE)
    network.add(NOTARY)  # answers no queries
    network.add(OTHER_NOTARY).be_honest_notary()
    keyring = make_keyring(NOTARY, OTHER_NOTARY)
    remote.reachable = False
    assert await verifies(keyring, REMOTE, event(remote, clock.ms()), clock.ms())
    assert network.posts(NOTARY) == 1
    assert network.posts(OTHER_NOTARY) == 1


async def test_a_notary_cannot_forge_a_servers_key(
    make_keyring: Callable[..., Keyring], network: FakeNetwork, clock: Clock
) -> None:
    remote = network.add(REMOTE)
    notary = network.add(NOTARY)
    remote.reachable = False
    forged = generate_signing_key("forged")

    def answer(body: JsonDict) -> list[JsonDict]:
        # The notary's key for the remote server, signed by the notary alone.
        document = {
            "server_name": REMOTE,
            "verify_keys": {key_id(forged): {"key": verify_key_base64(forged)}},
            "old_verify_keys": {},
            "valid_until_ts": clock.ms() + DAY_MS,
        }
        return [notary.sign(document)]

    notary.answer_query = answer
    keyring = make_keyring(NOTARY)
    forged_event = sign_json(
        {"type": "m.room.message", "origin_server_ts": clock.ms(), "content": {}}, REMOTE, forged
    )
    assert not await verifies(keyring, REMOTE, forged_event, clock.ms())
    assert network.posts(NOTARY) == 1


async def test_a_notary_answer_must_carry_the_notarys_signature(
    make_keyring: Callable[..., Keyring], network: FakeNetwork, clock: Clock
) -> None:
    remote = network.add(REMOTE)
    notary = network.add(NOTARY)
    remote.reachable = False
    impostor = generate_signing_key("imp")
    # The origin's genuine document, "notarised" with a key that is not the notary's.
    notary.answer_query = lambda body: [notary.sign(remote.document(), impostor)]
    keyring = make_keyring(NOTARY)
    assert not await verifies(keyring, REMOTE, event(remote, clock.ms()), clock.ms())


async def test_a_notary_cannot_answer_for_servers_not_asked_about(
    make_keyring: Callable[..., Keyring], network: FakeNetwork, clock: Clock
) -> None:
    remote = network.add(REMOTE)
    bystander = network.add(ServerName("bystander.example"))
    notary = network.add(NOTARY)
    remote.reachable = False
    bystander.reachable = False
    notary.answer_query = lambda body: [notary.sign(bystander.document())]
    keyring = make_keyring(NOTARY)
    assert not await verifies(keyring, REMOTE, event(remote, clock.ms()), clock.ms())
    # The unsolicited key was not taken either: asked about the bystander itself (and
    # the notary now knowing nothing), the key ring has no key for it.
    notary.answer_query = lambda body: []
    assert not await verifies(
        keyring, ServerName("bystander.example"), event(bystander, clock.ms()), clock.ms()
    )
    assert network.gets("bystander.example") == 1


# -- batching, sharing, negative cache -----------------------------------------------


async def test_many_events_from_one_server_need_one_fetch(
    keyring: Keyring, network: FakeNetwork, clock: Clock
) -> None:
    remote = network.add(REMOTE)
    other = network.add(ServerName("other.example"))
    checks: list[tuple[ServerName, JsonDict, int]] = []
    for i in range(50):
        ts = clock.ms() - 1000 * i
        checks.append((REMOTE, event(remote, ts, f"m{i}"), ts))
        checks.append((other.name, event(other, ts, f"m{i}"), ts))
    # A forged event among them fails alone.
    forged = event(remote, clock.ms(), "original")
    forged["content"] = {"body": "changed"}
    checks.append((REMOTE, forged, clock.ms()))
    # So does one the server never signed.
    checks.append((REMOTE, event(other, clock.ms()), clock.ms()))

    results = await keyring.verify_event_signatures(checks)
    assert results == [True] * 100 + [False, False]
    assert network.gets(REMOTE) == 1
    assert network.gets("other.example") == 1


async def test_concurrent_lookups_share_one_fetch(
    keyring: Keyring, network: FakeNetwork, clock: Clock
) -> None:
    remote = network.add(REMOTE)
    network.gate = asyncio.Event()
    now = clock.ms()
    lookups = [
        asyncio.create_task(verifies(keyring, REMOTE, event(remote, now, str(i)), now))
        for i in range(10)
    ]
    await asyncio.sleep(0.01)
    assert network.gets(REMOTE) == 1
    network.gate.set()
    assert await asyncio.gather(*lookups) == [True] * 10
    assert network.gets(REMOTE) == 1


async def test_a_lookup_returns_a_key_cached_while_it_read_the_store(
    keyring: Keyring,
    store: ServerKeyStore,
    network: FakeNetwork,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A second lookup reads the store (empty), then the first lookup's fetch caches the
    key: the second must return the cached key, not fail for want of one."""
    remote = network.add(REMOTE)
    network.gate = asyncio.Event()
    first_done = asyncio.Event()
    real_get_keys = store.get_keys
    tasks: list[asyncio.Task[bool]] = []

    async def get_keys(pairs: Any) -> Any:
        rows = await real_get_keys(pairs)
        if asyncio.current_task() is tasks[1]:
            assert network.gate is not None
            network.gate.set()  # let the first lookup's fetch finish now
            await first_done.wait()
        return rows

    monkeypatch.setattr(store, "get_keys", get_keys)
    now = clock.ms()
    tasks.extend(
        asyncio.create_task(verifies(keyring, REMOTE, event(remote, now, body), now))
        for body in ("1", "2")
    )
    first, second = tasks
    async with asyncio.timeout(5):
        assert await first
        assert not second.done()  # still waiting in its store read
        first_done.set()
        assert await second
    assert network.gets(REMOTE) == 1


async def test_a_cancelled_lookup_does_not_cancel_the_shared_fetch(
    keyring: Keyring, network: FakeNetwork, clock: Clock
) -> None:
    remote = network.add(REMOTE)
    network.gate = asyncio.Event()
    now = clock.ms()
    first = asyncio.create_task(verifies(keyring, REMOTE, event(remote, now), now))
    second = asyncio.create_task(verifies(keyring, REMOTE, event(remote, now), now))
    await asyncio.sleep(0.01)
    first.cancel()
    network.gate.set()
    assert await second
    assert first.cancelled()
    assert network.gets(REMOTE) == 1


async def test_failures_are_remembered_for_a_minute(
    make_keyring: Callable[..., Keyring], network: FakeNetwork, clock: Clock
) -> None:
    remote = network.add(REMOTE)
    network.add(NOTARY)  # answers no queries
    keyring = make_keyring(NOTARY)
    remote.reachable = False
    now = clock.ms()
    for _ in range(5):
        assert not await verifies(keyring, REMOTE, event(remote, now), now)
    assert network.gets(REMOTE) == 1
    assert network.posts(NOTARY) == 1

    # Another key of the unreachable server: only the notary is asked.
    signed_b2 = event(remote, now, key=generate_signing_key("b2"))
    assert not await verifies(keyring, REMOTE, signed_b2, now)
    assert network.gets(REMOTE) == 1
    assert network.posts(NOTARY) == 2

    clock.advance_ms(NEGATIVE_CACHE_MS + 1)
    remote.reachable = True
    now = clock.ms()
    assert await verifies(keyring, REMOTE, event(remote, now), now)
    assert network.gets(REMOTE) == 2


async def test_a_key_the_server_does_not_list_is_not_asked_for_again_at_once(
    keyring: Keyring, network: FakeNetwork, clock: Clock
) -> None:
    remote = network.add(REMOTE)
    signed_nope = event(remote, clock.ms(), key=generate_signing_key("nope"))
    for _ in range(3):
        assert not await verifies(keyring, REMOTE, signed_nope, clock.ms())
    assert network.gets(REMOTE) == 1


# -- this server's keys ----------------------------------------------------------------


async def test_own_key_document_is_signed_and_resigned_at_half_validity(
    keyring: Keyring, local_key: SigningKey, clock: Clock
) -> None:
    start = clock.ms()
    document = keyring.own_server_keys()
    assert document["server_name"] == LOCAL
    assert document["verify_keys"] == {key_id(local_key): {"key": verify_key_base64(local_key)}}
    assert document["old_verify_keys"] == {}
    assert document["valid_until_ts"] == start + DAY_MS
    assert verify_json_signature(document, LOCAL, get_verify_key(local_key))

    clock.advance_ms(DAY_MS // 2 - 1)
    assert keyring.own_server_keys() == document
    clock.advance_ms(1)
    renewed = keyring.own_server_keys()
    assert renewed["valid_until_ts"] == clock.ms() + DAY_MS
    assert verify_json_signature(renewed, LOCAL, get_verify_key(local_key))


async def test_own_server_lookups_need_no_io(
    keyring: Keyring, network: FakeNetwork, local_key: SigningKey, clock: Clock
) -> None:
    far = clock.ms() + 365 * DAY_MS
    assert await verifies(keyring, LOCAL, sign_json({"a": 1}, LOCAL, local_key), far)
    unknown = sign_json({"a": 1}, LOCAL, generate_signing_key("unknown"))
    assert not await verifies(keyring, LOCAL, unknown, far)
    signed = sign_json({"a": 1}, LOCAL, local_key)
    assert await verifies(keyring, LOCAL, signed, clock.ms())
    assert network.calls == []


# -- signatures ------------------------------------------------------------------------


async def test_unknown_signing_keys_are_skipped_but_one_must_verify(
    keyring: Keyring, network: FakeNetwork, clock: Clock
) -> None:
    remote = network.add(REMOTE)
    now = clock.ms()
    signed = event(remote, now)
    signed["signatures"][REMOTE]["ed25519:gone"] = "c2lnbmF0dXJl"
    signed["signatures"][REMOTE]["other:alg"] = "c2lnbmF0dXJl"
    assert await verifies(keyring, REMOTE, signed, now)
    only_unknown = {**signed, "signatures": {REMOTE: {"ed25519:gone": "c2lnbmF0dXJl"}}}
    assert not await verifies(keyring, REMOTE, only_unknown, now)
    assert not await verifies(keyring, REMOTE, {"a": 1}, now)
    # Signed by the server, but checked as another server's: no signature of theirs.
    assert not await verifies(keyring, ServerName("other.example"), signed, now)


async def test_x_matrix_requests_verify_with_the_origins_key(
    keyring: Keyring, network: FakeNetwork
) -> None:
    remote = network.add(REMOTE)
    uri = "/_matrix/federation/v1/send/txn1?x=1"
    content = {"pdus": [], "edus": [{"edu_type": "m.typing"}]}
    header = authorization_header(REMOTE, remote.key, LOCAL, "PUT", uri, content)
    auth = parse_authorization(header)

    async def check(**changes: Any) -> bool:
        request: dict[str, Any] = {
            "method": "PUT",
            "uri": uri,
            "destination": LOCAL,
            "content": content,
        }
        request.update(changes)
        return await keyring.verify_request(auth, **request)

    assert await check()
    assert not await check(content={"pdus": []})
    assert not await check(uri="/_matrix/federation/v1/send/txn2")
    assert not await check(method="POST")
    # Addressed to another server.
    assert not await check(destination="elsewhere.example")
    # Signed for us, but the header names another destination: refused (401 upstream).
    readdressed = dataclasses.replace(auth, destination=ServerName("elsewhere.example"))
    assert not await keyring.verify_request(
        readdressed, method="PUT", uri=uri, destination=LOCAL, content=content
    )
    # Older servers leave the destination out of the header.
    legacy = dataclasses.replace(auth, destination=None)
    assert await keyring.verify_request(
        legacy, method="PUT", uri=uri, destination=LOCAL, content=content
    )
    assert network.gets(REMOTE) == 1


async def test_x_matrix_requests_with_an_unknown_key_fail(
    keyring: Keyring, network: FakeNetwork
) -> None:
    remote = network.add(REMOTE)
    stranger = generate_signing_key("zz")
    header = authorization_header(REMOTE, stranger, LOCAL, "GET", "/_matrix/federation/v1/version")
    assert not await keyring.verify_request(
        parse_authorization(header),
        method="GET",
        uri="/_matrix/federation/v1/version",
        destination=LOCAL,
        content=None,
    )
    assert network.gets(REMOTE) == 1
    del remote


# -- answering notary queries ----------------------------------------------------------


async def test_notary_queries_relay_the_servers_response_signed_by_us(
    keyring: Keyring, network: FakeNetwork, local_key: SigningKey, clock: Clock
) -> None:
    remote = network.add(REMOTE)
    kid = key_id(remote.key)
    answers = await keyring.query_server_keys({REMOTE: {kid: None}, LOCAL: {}})
    assert network.gets(REMOTE) == 1
    assert [answer["server_name"] for answer in answers] == [REMOTE, LOCAL]
    relayed, own = answers
    assert relayed["verify_keys"] == {kid: {"key": verify_key_base64(remote.key)}}
    assert verify_json_signature(relayed, REMOTE, get_verify_key(remote.key))
    assert verify_json_signature(relayed, LOCAL, get_verify_key(local_key))
    assert verify_json_signature(own, LOCAL, get_verify_key(local_key))

    # Answered from the store while it lasts; refreshed when asked for longer.
    assert await keyring.query_server_keys({REMOTE: {}}) == [relayed]
    assert network.gets(REMOTE) == 1
    later = clock.ms() + 2 * DAY_MS
    remote.reachable = False
    # Unreachable: the stored response is still answered.
    assert await keyring.query_server_keys({REMOTE: {kid: later}}) == [relayed]
    assert network.gets(REMOTE) == 2
    remote.reachable = True
    clock.advance_ms(NEGATIVE_CACHE_MS + 1)
    remote.validity_ms = 3 * DAY_MS
    (refreshed,) = await keyring.query_server_keys({REMOTE: {}}, minimum_valid_until_ts=later)
    assert refreshed["valid_until_ts"] == clock.ms() + 3 * DAY_MS
    assert network.gets(REMOTE) == 3


async def test_notary_queries_leave_out_servers_without_keys(
    keyring: Keyring, network: FakeNetwork
) -> None:
    assert await keyring.query_server_keys({ServerName("nowhere.example"): {}}) == []
    assert await keyring.query_server_keys({}) == []
    assert network.gets("nowhere.example") == 1
