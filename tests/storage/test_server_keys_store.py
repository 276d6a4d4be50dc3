"""ServerKeyStore contract: the same behaviour on SQLite and PostgreSQL (Server-Server API,
"Retrieving server keys")."""

from __future__ import annotations

import orjson

from peyvand.storage.database import Database
from peyvand.storage.server_keys import KeyResponse, ServerKey, ServerKeyStore
from peyvand.types import ServerName

A = ServerName("a.example")
B = ServerName("b.example")


def key(
    server: ServerName, kid: str, valid_until: int, *, public: str = "pub", fetched: int = 1
) -> ServerKey:
    return ServerKey(server, kid, f"{public}-{kid}", valid_until, fetched)


def response(server: str, marker: int) -> str:
    return orjson.dumps({"server_name": server, "marker": marker}).decode()


async def test_keys_are_read_back_by_server_and_key_id(database: Database) -> None:
    store = ServerKeyStore(database)
    assert await store.get_keys([(A, "ed25519:1")]) == {}
    await store.store_responses(
        [KeyResponse([key(A, "ed25519:1", 100), key(A, "ed25519:old", 50)], response(A, 1))]
    )
    await store.store_responses([KeyResponse([key(B, "ed25519:1", 200)], response(B, 1))])

    found = await store.get_keys(
        [
            (A, "ed25519:1"),
            (A, "ed25519:old"),
            (B, "ed25519:1"),
            (B, "ed25519:old"),
            (ServerName("c"), "x"),
        ]
    )
    assert found == {
        (A, "ed25519:1"): key(A, "ed25519:1", 100),
        (A, "ed25519:old"): key(A, "ed25519:old", 50),
        (B, "ed25519:1"): key(B, "ed25519:1", 200),
    }
    # A key ID of one server is not another server's.
    assert await store.get_keys([(B, "ed25519:old")]) == {}
    assert await store.get_keys([]) == {}


async def test_a_key_only_moves_to_a_later_valid_until(database: Database) -> None:
    store = ServerKeyStore(database)
    await store.store_responses(
        [KeyResponse([key(A, "ed25519:1", 100, fetched=1)], response(A, 1))]
    )
    # A fresher response extends it, and its JSON replaces the old one.
    await store.store_responses(
        [KeyResponse([key(A, "ed25519:1", 300, fetched=2)], response(A, 2))]
    )
    # A stale one (a notary's older copy) changes nothing.
    await store.store_responses(
        [KeyResponse([key(A, "ed25519:1", 200, fetched=3)], response(A, 3))]
    )
    assert await store.get_keys([(A, "ed25519:1")]) == {
        (A, "ed25519:1"): key(A, "ed25519:1", 300, fetched=2)
    }
    assert await store.get_responses([A]) == {A: [response(A, 2)]}


async def test_several_responses_are_stored_in_one_call(database: Database) -> None:
    store = ServerKeyStore(database)
    await store.store_responses(
        [
            KeyResponse([key(A, "ed25519:1", 100, fetched=5)], response(A, 1)),
            KeyResponse([key(B, "ed25519:1", 100, fetched=5)], response(B, 1)),
        ]
    )
    await store.store_responses([])
    assert set(await store.get_keys([(A, "ed25519:1"), (B, "ed25519:1")])) == {
        (A, "ed25519:1"),
        (B, "ed25519:1"),
    }


async def test_responses_are_distinct_per_server_newest_first(database: Database) -> None:
    store = ServerKeyStore(database)
    await store.store_responses(
        [
            KeyResponse(
                [key(A, "ed25519:1", 100, fetched=1), key(A, "ed25519:2", 100, fetched=1)],
                response(A, 1),
            )
        ]
    )
    await store.store_responses(
        [KeyResponse([key(A, "ed25519:2", 200, fetched=2)], response(A, 2))]
    )
    await store.store_responses(
        [KeyResponse([key(B, "ed25519:1", 200, fetched=2)], response(B, 1))]
    )
    assert await store.get_responses([A, B, ServerName("c.example")]) == {
        A: [response(A, 2), response(A, 1)],
        B: [response(B, 1)],
    }
    assert await store.get_responses([]) == {}


async def test_large_batches_span_several_statements(database: Database) -> None:
    store = ServerKeyStore(database)
    servers = [ServerName(f"s{i}.example") for i in range(700)]
    await store.store_responses(
        KeyResponse([key(server, "ed25519:k", 10 + i)], response(server, i))
        for i, server in enumerate(servers)
    )
    found = await store.get_keys([(server, "ed25519:k") for server in servers])
    assert {pair: row.valid_until_ts for pair, row in found.items()} == {
        (server, "ed25519:k"): 10 + i for i, server in enumerate(servers)
    }
    assert len(await store.get_responses(servers)) == 700
