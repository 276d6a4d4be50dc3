"""Hostile and malformed federation input: Peyvand rejects it cleanly.

A fake homeserver (``harness.fake_server``) joins a Peyvand room and then sends what a
broken or malicious server would: unauthenticated or forged requests, oversized or
malformed transactions, non-canonical PDUs, events from the wrong server, events that fail
the authorization rules, tampered content, and auth chains that never end. Every test
checks the answer (HTTP status, or the per-PDU result of ``/send``), that nothing bad was
stored (``/messages``, ``GET /rooms/{id}/event``, ``GET /rooms/{id}/state``) and that the
server log holds no "Unhandled error".

These tests run against a Peyvand of this module's own (not the session's shared one):
they provoke errors on purpose, and a failure here must not leak into the log the other
federation tests inspect.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.client import Account, MatrixClient
from harness.fake_server import FEDERATION_V1, FakeRequest, FakeServer, new_signing_key, q
from harness.ports import free_port
from harness.server import HomeserverProcess, start_homeserver
from peyvand.events.canonical_json import MAX_INT
from peyvand.events.pdu import Pdu
from peyvand.events.signing import sign_event
from peyvand.federation.request_auth import authorization_header
from peyvand.types import ServerName, UserID

TIMEOUT_SECONDS = 20
_names = itertools.count()


@pytest.fixture(scope="module")
def peyvand(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeserverProcess]:
    """This module's own federating Peyvand for ``backend`` (see the module docstring)."""
    server = start_homeserver(
        backend, request, tmp_path_factory.mktemp(f"peyvand-bad-{backend}"), federation=True
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def fake(peyvand: HomeserverProcess, tmp_path: Path) -> AsyncIterator[FakeServer]:
    async with FakeServer(tmp_path, peer=peyvand.server_name) as server:
        yield server


@dataclass(frozen=True, slots=True)
class Room:
    """A public Peyvand room named "original", created by ``alice`` (on Peyvand) and
    joined by ``bob`` of the fake server."""

    room_id: str
    alice: Account
    bob: str


@pytest.fixture
async def room(peyvand_client: MatrixClient, fake: FakeServer) -> Room:
    alice = await peyvand_client.register()
    room_id = (
        await peyvand_client.request(
            "POST", "createRoom", json={"preset": "public_chat", "name": "original"}, token=alice
        )
    ).ok()["room_id"]
    bob = fake.user(f"bob{next(_names)}")
    async with asyncio.timeout(TIMEOUT_SECONDS):
        await fake.join(room_id, bob)
    return Room(room_id, alice, bob)


@pytest.fixture
def new_log(peyvand: HomeserverProcess) -> Callable[[], str]:
    """What the server logged since the test began."""
    start = len(peyvand.log())
    return lambda: peyvand.log()[start:]


# -- helpers ---------------------------------------------------------------------------


def _message(fake: FakeServer, room: Room, body: str, **kwargs: Any) -> Pdu:
    return fake.make_pdu(
        None,
        room.room_id,
        room.bob,
        "m.room.message",
        {"msgtype": "m.text", "body": body},
        **kwargs,
    )


async def _timeline(client: MatrixClient, room: Room) -> list[dict[str, Any]]:
    """The room's timeline as Peyvand's user sees it through /messages, oldest first."""
    response = (
        await client.request(
            "GET",
            f"rooms/{q(room.room_id)}/messages",
            token=room.alice,
            params={"dir": "b", "limit": "200"},
        )
    ).ok()
    return list(reversed(response["chunk"]))


async def _bodies(client: MatrixClient, room: Room) -> list[str]:
    return [
        e["content"]["body"]
        for e in await _timeline(client, room)
        if e["type"] == "m.room.message" and isinstance(e["content"].get("body"), str)
    ]


async def _state(client: MatrixClient, room: Room) -> list[dict[str, Any]]:
    return list(
        (await client.request("GET", f"rooms/{q(room.room_id)}/state", token=room.alice)).ok()
    )


async def _state_content(client: MatrixClient, room: Room, event_type: str) -> Any:
    response = await client.request(
        "GET", f"rooms/{q(room.room_id)}/state/{event_type}", token=room.alice
    )
    return response.body if response.status == 200 else response.status


async def _get_event(client: MatrixClient, room: Room, event_id: str) -> tuple[int, Any]:
    response = await client.request(
        "GET", f"rooms/{q(room.room_id)}/event/{q(event_id)}", token=room.alice
    )
    return response.status, response.body


async def _assert_not_stored(client: MatrixClient, room: Room, *event_ids: str) -> None:
    """None of ``event_ids`` is visible: not by ID, not in /messages, not in the state."""
    timeline = {e["event_id"] for e in await _timeline(client, room)}
    state = {e["event_id"] for e in await _state(client, room)}
    for event_id in event_ids:
        status, body = await _get_event(client, room, event_id)
        assert status == 404, f"{event_id} is visible: {body}"
        assert event_id not in timeline
        assert event_id not in state


async def _assert_stored(client: MatrixClient, room: Room, *event_ids: str) -> None:
    timeline = {e["event_id"] for e in await _timeline(client, room)}
    for event_id in event_ids:
        assert event_id in timeline, f"{event_id} is not in the timeline"


def _not_accepted(answer: Any, event_id: str) -> bool:
    """The /send answer does not accept the PDU: an error for it, or no entry at all (a PDU
    dropped before it had a trusted event ID)."""
    result = answer["pdus"].get(event_id)
    return result is None or "error" in result


def _no_unhandled_error(log: str) -> None:
    assert "Unhandled error" not in log, log[log.find("Unhandled error") - 2000 :][:6000]


async def _peyvand_key_id(fake: FakeServer) -> str:
    status, keys = await fake.request("GET", "/_matrix/key/v2/server", sign=False)
    assert status == 200
    return str(next(iter(keys["verify_keys"])))


# -- request authentication --------------------------------------------------------------


async def test_request_without_authorization_is_401(
    fake: FakeServer, room: Room, peyvand_client: MatrixClient, new_log: Callable[[], str]
) -> None:
    """Server-Server API, "Request Authentication": every federation request must carry an
    X-Matrix Authorization header; one without it is refused with 401."""
    pdu = _message(fake, room, "unauthenticated")
    body = {"origin": fake.server_name, "origin_server_ts": 0, "pdus": [dict(pdu.data)]}
    status, answer = await fake.request("PUT", f"{FEDERATION_V1}/send/noauth", body, sign=False)
    assert status == 401, answer
    assert answer["errcode"] == "M_UNAUTHORIZED"
    status, answer = await fake.request(
        "GET", f"{FEDERATION_V1}/event/{q(pdu.event_id)}", sign=False
    )
    assert status == 401, answer
    await _assert_not_stored(peyvand_client, room, pdu.event_id)
    _no_unhandled_error(new_log())


@pytest.mark.parametrize(
    "header",
    [
        "X-Matrix",
        "X-Matrix ",
        "Bearer abcdef",
        'X-Matrix origin="{origin}"',
        'X-Matrix origin="{origin}",key="ed25519:x"',
        'X-Matrix origin="{origin}",key="ed25519:x",sig="',
        'X-Matrix origin="{origin}",key="ed25519:x",sig="!!not base64!!"',
        'X-Matrix origin="{origin}",key="rsa:x",sig="abcd"',
        "X-Matrix ,,,=,",
    ],
)
async def test_malformed_authorization_is_401(
    fake: FakeServer, room: Room, new_log: Callable[[], str], header: str
) -> None:
    """Server-Server API, "Request Authentication": an Authorization header that is not a
    well-formed X-Matrix header with origin, key and sig is refused with 401."""
    pdu = _message(fake, room, "malformed auth")
    status, answer = await fake.request(
        "PUT",
        f"{FEDERATION_V1}/send/malformed{next(_names)}",
        {"pdus": [dict(pdu.data)]},
        authorization=header.format(origin=fake.server_name),
    )
    assert status == 401, answer
    assert answer["errcode"] == "M_UNAUTHORIZED"
    _no_unhandled_error(new_log())


@pytest.mark.parametrize(
    "forgery", ["other key", "other body", "other path", "other method", "unknown origin"]
)
async def test_forged_authorization_is_401(
    fake: FakeServer,
    room: Room,
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    new_log: Callable[[], str],
    forgery: str,
) -> None:
    """Server-Server API, "Request Authentication": the X-Matrix signature must be the origin's,
    with a key it publishes, over exactly this method, URI, destination and body; anything else
    (another key under the origin's key ID, a signature of another request, an origin whose keys
    cannot be had) is refused with 401 and the request does nothing."""
    pdu = _message(fake, room, f"forged: {forgery}")
    path = f"{FEDERATION_V1}/send/forged{next(_names)}"
    body = {"origin": fake.server_name, "origin_server_ts": 0, "pdus": [dict(pdu.data)]}
    origin, key, method, signed_path, signed_body = (
        fake.server_name, fake.signing_key, "PUT", path, body,
    )  # fmt: skip
    if forgery == "other key":
        key = new_signing_key(fake.signing_key.version)  # same key ID, not the published key
    elif forgery == "other body":
        signed_body = {**body, "pdus": []}
    elif forgery == "other path":
        signed_path = path + "x"
    elif forgery == "other method":
        method = "POST"
    elif forgery == "unknown origin":
        origin = ServerName(f"127.0.0.1:{free_port()}")  # nothing listens there
    header = authorization_header(
        origin, key, peyvand.server_name, method, signed_path, signed_body
    )
    async with asyncio.timeout(TIMEOUT_SECONDS):
        status, answer = await fake.request("PUT", path, body, authorization=header)
    assert status == 401, answer
    assert answer["errcode"] == "M_UNAUTHORIZED"
    await _assert_not_stored(peyvand_client, room, pdu.event_id)
    _no_unhandled_error(new_log())


@pytest.mark.parametrize("destination", ["127.0.0.1:1", "example.org", "127.0.0.1"])
async def test_destination_mismatch_is_401(
    fake: FakeServer,
    room: Room,
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    new_log: Callable[[], str],
    destination: ServerName,
) -> None:
    """Server-Server API, "Request Authentication": the request is signed for ``destination``; a
    receiver that is not that server refuses it with 401 (the signature must not be replayable
    to another server)."""
    pdu = _message(fake, room, f"for {destination}")
    status, answer = await fake.request(
        "PUT",
        f"{FEDERATION_V1}/send/dest{next(_names)}",
        {"pdus": [dict(pdu.data)]},
        destination=destination,
        connect_to=peyvand.server_name,
    )
    assert status == 401, answer
    assert answer["errcode"] == "M_UNAUTHORIZED"
    await _assert_not_stored(peyvand_client, room, pdu.event_id)
    _no_unhandled_error(new_log())


# -- transactions ------------------------------------------------------------------------


async def test_transaction_with_more_than_50_pdus_is_400(
    fake: FakeServer, room: Room, peyvand_client: MatrixClient, new_log: Callable[[], str]
) -> None:
    """Server-Server API, "Transactions": a transaction holds at most 50 PDUs; a bigger one is
    refused with 400 and none of its PDUs is processed."""
    pdus = [_message(fake, room, f"flood {i}") for i in range(51)]
    status, answer = await fake.send_pdus(pdus)
    assert status == 400, answer
    await _assert_not_stored(peyvand_client, room, pdus[0].event_id, pdus[-1].event_id)
    assert not any(b.startswith("flood") for b in await _bodies(peyvand_client, room))
    _no_unhandled_error(new_log())


async def test_transaction_with_more_than_100_edus_is_400(
    fake: FakeServer, room: Room, peyvand_client: MatrixClient, new_log: Callable[[], str]
) -> None:
    """Server-Server API, "Transactions": at most 100 EDUs; a bigger transaction is refused with
    400 and its PDUs are not processed."""
    pdu = _message(fake, room, "with too many EDUs")
    edu = {
        "edu_type": "m.typing",
        "content": {"room_id": room.room_id, "user_id": room.bob, "typing": True},
    }
    status, answer = await fake.send_pdus([pdu], [edu] * 101)
    assert status == 400, answer
    await _assert_not_stored(peyvand_client, room, pdu.event_id)
    _no_unhandled_error(new_log())


@pytest.mark.parametrize(
    "body", [[], "text", 7, True, {"pdus": "not a list"}, {"pdus": [], "edus": {}}]
)
async def test_transaction_body_not_an_object_is_400(
    fake: FakeServer, room: Room, new_log: Callable[[], str], body: Any
) -> None:
    """Server-Server API, "Transactions" (transactions.yaml): the body is an object whose
    ``pdus`` and ``edus`` are arrays; anything else is a 400."""
    status, answer = await fake.send_transaction(body)
    assert status == 400, answer
    _no_unhandled_error(new_log())


async def test_junk_entries_in_pdus_are_dropped(
    fake: FakeServer, room: Room, peyvand_client: MatrixClient, new_log: Callable[[], str]
) -> None:
    """Server-Server API, "Checks performed on receipt of a PDU" step 1: entries of ``pdus``
    that are not events are dropped one by one; the rest of the transaction is processed."""
    good = _message(fake, room, "among junk")
    junk = [1, "x", None, [], {}, {"room_id": 5}, {"room_id": room.room_id}]
    status, answer = await fake.send_transaction({"pdus": [*junk, dict(good.data)]})
    assert status == 200, answer
    assert answer["pdus"] == {good.event_id: {}}
    await _assert_stored(peyvand_client, room, good.event_id)
    _no_unhandled_error(new_log())


async def test_same_transaction_id_twice_gets_the_same_answer(
    fake: FakeServer, room: Room, peyvand_client: MatrixClient, new_log: Callable[[], str]
) -> None:
    """Server-Server API, "Transactions": a retransmission (same origin and txnId) is answered
    as the first time and processed once: the event is stored once."""
    pdu = _message(fake, room, "sent twice")
    txn_id = f"twice{next(_names)}"
    first = await fake.send_pdus([pdu], txn_id=txn_id)
    second = await fake.send_pdus([pdu], txn_id=txn_id)
    assert first == (200, {"pdus": {pdu.event_id: {}}})
    assert second == first
    assert (await _bodies(peyvand_client, room)).count("sent twice") == 1
    _no_unhandled_error(new_log())


# -- non-canonical PDUs --------------------------------------------------------------------


async def _send_bad_pdus(
    fake: FakeServer,
    room: Room,
    peyvand_client: MatrixClient,
    variants: dict[str, Callable[[dict[str, Any]], None]],
) -> None:
    """Send one PDU per variant (a message from bob altered by the function, then hashed
    and signed correctly) with a good control message; every variant must be dropped."""
    version = fake.rooms[room.room_id].room_version
    bad_ids: dict[str, str] = {}
    raws = []
    for name, alter in variants.items():
        event = fake.event_template(
            room.room_id, room.bob, "m.room.message", {"msgtype": "m.text", "body": name}
        )
        alter(event)
        event_id, raw = fake.raw_pdu(version, event)
        bad_ids[name] = event_id
        raws.append(raw)
    control = _message(fake, room, "control")
    status, answer = await fake.send_pdus([*raws, control])
    assert status == 200, answer
    assert answer["pdus"].get(control.event_id) == {}
    for name, event_id in bad_ids.items():
        assert _not_accepted(answer, event_id), f"{name}: {answer}"
    await _assert_stored(peyvand_client, room, control.event_id)
    await _assert_not_stored(peyvand_client, room, *bad_ids.values())
    bodies = await _bodies(peyvand_client, room)
    assert not set(bodies) & set(variants)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def alter(event: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = event
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value

    return alter


async def test_integers_outside_canonical_range_are_dropped(
    fake: FakeServer, room: Room, peyvand_client: MatrixClient, new_log: Callable[[], str]
) -> None:
    """Rooms v6+ "Canonical JSON" (depth_v6.yaml for ``depth``): integers must lie in
    [-(2**53)+1, 2**53-1]; a PDU holding any other integer, anywhere, is dropped over
    federation."""
    await _send_bad_pdus(
        fake,
        room,
        peyvand_client,
        {
            "depth too big": _set("depth", MAX_INT + 1),
            "depth negative": _set("depth", -1),
            "content int too big": _set("content.n", MAX_INT + 1),
            "content int too small": _set("content.n", -MAX_INT - 1),
            "nested int too big": _set("content.deep.list", [1, [2, MAX_INT + 1]]),
            "timestamp too big": _set("origin_server_ts", MAX_INT + 1),
        },
    )
    _no_unhandled_error(new_log())


async def test_integer_beyond_64_bits_drops_the_pdu_not_the_transaction(
    fake: FakeServer, room: Room, peyvand_client: MatrixClient, new_log: Callable[[], str]
) -> None:
    """Rooms v6+ "Canonical JSON" and "Transactions": a PDU holding an integer too big even
    for 64 bits is one invalid PDU, dropped like any other; the transaction's other PDUs
    are processed (a 400 for the whole transaction would make the sender retry it forever
    and stall everything behind it)."""
    await _send_bad_pdus(
        fake, room, peyvand_client, {"content int of 65 bits": _set("content.n", 2**64)}
    )
    _no_unhandled_error(new_log())


async def test_floats_are_dropped(
    fake: FakeServer, room: Room, peyvand_client: MatrixClient, new_log: Callable[[], str]
) -> None:
    """Rooms v6+ "Canonical JSON": no floats, anywhere; such a PDU is dropped."""
    await _send_bad_pdus(
        fake,
        room,
        peyvand_client,
        {
            "float in content": _set("content.n", 1.5),
            "integral float in content": _set("content.n", 2.0),
            "nested float": _set("content.deep.list", [1, {"x": 0.25}]),
            "float depth": _set("depth", 3.0),
            "float timestamp": _set("origin_server_ts", 1.7e12),
        },
    )
    _no_unhandled_error(new_log())


async def test_nul_in_strings_is_dropped(
    fake: FakeServer, room: Room, peyvand_client: MatrixClient, new_log: Callable[[], str]
) -> None:
    """Server-Server API, "Checks performed on receipt of a PDU" step 1 (Peyvand's rule beyond
    the spec, see events/received.py): no U+0000 in any string or object key; such a PDU is
    dropped."""
    await _send_bad_pdus(
        fake,
        room,
        peyvand_client,
        {
            "nul in body": _set("content.body", "a\x00b"),
            "nul in key": _set("content.a\x00b", 1),
            "nul in nested string": _set("content.deep.list", ["ok", "\x00"]),
            "nul in type": _set("type", "m.room.message\x00"),
        },
    )
    _no_unhandled_error(new_log())


# -- joins ---------------------------------------------------------------------------------


async def test_send_join_for_another_room_is_400(
    fake: FakeServer, room: Room, peyvand_client: MatrixClient, new_log: Callable[[], str]
) -> None:
    """send_join v2 (joins-v2.yaml): the event's ``room_id`` must be the room in the URL;
    a join event for another room is a 400 and joins no room."""
    other = (
        await peyvand_client.request(
            "POST", "createRoom", json={"preset": "public_chat"}, token=room.alice
        )
    ).ok()["room_id"]
    carol = fake.user(f"carol{next(_names)}")
    status, template = await fake.make_join(other, carol)
    assert status == 200, template
    join = fake.join_event(template)
    status, answer = await fake.send_join(room.room_id, join)
    assert status == 400, answer
    for room_id in (room.room_id, other):
        members = (
            await peyvand_client.request(
                "GET", f"rooms/{q(room_id)}/joined_members", token=room.alice
            )
        ).ok()["joined"]
        assert carol not in members
    await _assert_not_stored(peyvand_client, room, join.event_id)
    _no_unhandled_error(new_log())


@pytest.mark.parametrize(
    "defect", ["not an object", "event ID not the URL's", "not a join", "join of someone else"]
)
async def test_malformed_send_join_is_refused(
    fake: FakeServer,
    room: Room,
    peyvand_client: MatrixClient,
    new_log: Callable[[], str],
    defect: str,
) -> None:
    """send_join v2 (joins-v2.yaml): the body is the signed join event the URL names, a
    membership "join" of a user of the requesting server whose state_key is the sender;
    anything else is refused with 400 or 403 and joins nobody."""
    carol = fake.user(f"carol{next(_names)}")
    status, template = await fake.make_join(room.room_id, carol)
    assert status == 200, template
    event = dict(template["event"])
    if defect == "not a join":
        event["content"] = {"membership": "leave"}
    elif defect == "join of someone else":
        event["state_key"] = room.alice.user_id
    join = fake.join_event({**template, "event": event})
    if defect == "not an object":
        status, answer = await fake.request(
            "PUT",
            f"/_matrix/federation/v2/send_join/{q(room.room_id)}/{q(join.event_id)}",
            [dict(join.data)],
        )
    elif defect == "event ID not the URL's":
        status, answer = await fake.send_join(room.room_id, join, event_id="$" + "A" * 43)
    else:
        status, answer = await fake.send_join(room.room_id, join)
    assert status in (400, 403), answer
    members = (
        await peyvand_client.request(
            "GET", f"rooms/{q(room.room_id)}/joined_members", token=room.alice
        )
    ).ok()["joined"]
    assert carol not in members
    await _assert_not_stored(peyvand_client, room, join.event_id)
    _no_unhandled_error(new_log())


@pytest.mark.parametrize("signer", ["other key", "other server", "unsigned"])
async def test_send_join_not_signed_by_the_joining_server_is_rejected(
    fake: FakeServer,
    room: Room,
    peyvand_client: MatrixClient,
    new_log: Callable[[], str],
    signer: str,
) -> None:
    """Server-Server API, "Validating hashes and signatures on received events": a join must be
    signed by the server of its sender; send_join of a join signed with another key under the
    joining server's key ID, by another server only, or by nobody is refused (4xx) and the user
    does not join."""
    carol = fake.user(f"carol{next(_names)}")
    status, template = await fake.make_join(room.room_id, carol)
    assert status == 200, template
    if signer == "other key":
        join = fake.join_event(template, signing_key=new_signing_key(fake.signing_key.version))
    else:
        join = fake.join_event(
            template, origin=ServerName("127.0.0.1:1"), signing_key=new_signing_key()
        )
    data = dict(join.data)
    if signer == "unsigned":
        data["signatures"] = {}
    async with asyncio.timeout(TIMEOUT_SECONDS):
        status, answer = await fake.send_join(room.room_id, data, event_id=join.event_id)
    assert 400 <= status < 500, answer
    members = (
        await peyvand_client.request(
            "GET", f"rooms/{q(room.room_id)}/joined_members", token=room.alice
        )
    ).ok()["joined"]
    assert carol not in members
    await _assert_not_stored(peyvand_client, room, join.event_id)
    _no_unhandled_error(new_log())


async def test_send_join_for_a_user_of_another_server_is_403(
    fake: FakeServer,
    room: Room,
    peyvand_client: MatrixClient,
    tmp_path: Path,
    new_log: Callable[[], str],
) -> None:
    """send_join v2: the joining user must belong to the requesting server; another
    server (even one that signs the event itself) cannot join the fake's user."""
    carol = fake.user(f"carol{next(_names)}")
    status, template = await fake.make_join(room.room_id, carol)
    assert status == 200, template
    async with FakeServer(tmp_path / "impostor", peer=fake.peer) as impostor:
        join = fake.join_event(
            template, origin=impostor.server_name, signing_key=impostor.signing_key
        )
        status, answer = await impostor.send_join(room.room_id, join)
    assert status == 403, answer
    await _assert_not_stored(peyvand_client, room, join.event_id)
    _no_unhandled_error(new_log())


# -- events from the wrong server ------------------------------------------------------------


@pytest.mark.parametrize("sender", ["peyvand user", "third server user"])
@pytest.mark.parametrize("forged_sender_signature", [False, True])
async def test_event_whose_sender_is_not_from_the_origin_is_not_stored(
    fake: FakeServer,
    room: Room,
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    new_log: Callable[[], str],
    sender: str,
    forged_sender_signature: bool,
) -> None:
    """Server-Server API, "Validating hashes and signatures on received events": an event must
    be signed by its sender's server. The fake forges a message of Peyvand's own user (or of a
    third server's user), signed only by itself, or with a made-up signature under the sender's
    server name: it is not accepted and not stored."""
    if sender == "peyvand user":
        user = room.alice.user_id
        auth_events = fake.auth_events_for(room.room_id, "m.room.message", user, None, {})
    else:
        user = UserID(f"@eve:127.0.0.1:{free_port()}")  # nothing listens there
        auth_events = fake.auth_events_for(room.room_id, "m.room.message", room.bob, None, {})
    pdu = fake.make_pdu(
        None,
        room.room_id,
        user,
        "m.room.message",
        {"msgtype": "m.text", "body": "forged"},
        auth_events=auth_events,
    )
    data = dict(pdu.data)
    if forged_sender_signature:
        # A signature under the sender's server name and (for Peyvand) its real key ID,
        # made with a key of the fake's.
        server = ServerName(user.split(":", 1)[1])
        key_id = await _peyvand_key_id(fake) if sender == "peyvand user" else "ed25519:x"
        forged = sign_event(
            data, pdu.room_version, server, new_signing_key(key_id.split(":", 1)[1])
        )
        data["signatures"] = {**data["signatures"], server: forged["signatures"][server]}
    async with asyncio.timeout(TIMEOUT_SECONDS):
        status, answer = await fake.send_pdus([data])
    assert status == 200, answer
    assert _not_accepted(answer, pdu.event_id), answer
    await _assert_not_stored(peyvand_client, room, pdu.event_id)
    assert "forged" not in await _bodies(peyvand_client, room)
    _no_unhandled_error(new_log())


# -- authorization rules --------------------------------------------------------------------


async def test_message_from_a_non_member_is_rejected(
    fake: FakeServer, room: Room, peyvand_client: MatrixClient, new_log: Callable[[], str]
) -> None:
    """Authorization rules ("If the sender's current membership state is not join,
    reject"): a message from a user of the fake server who never joined is rejected."""
    mallory = fake.user(f"mallory{next(_names)}")
    pdu = fake.make_pdu(
        None, room.room_id, mallory, "m.room.message", {"msgtype": "m.text", "body": "intruder"}
    )
    status, answer = await fake.send_pdus([pdu])
    assert status == 200, answer
    assert "error" in answer["pdus"][pdu.event_id], answer
    await _assert_not_stored(peyvand_client, room, pdu.event_id)
    assert "intruder" not in await _bodies(peyvand_client, room)
    _no_unhandled_error(new_log())


async def test_power_levels_from_a_user_without_power_are_rejected_and_never_in_state(
    fake: FakeServer, room: Room, peyvand_client: MatrixClient, new_log: Callable[[], str]
) -> None:
    """Authorization rules (m.room.power_levels; "Rejection"): bob (power 0) cannot
    raise himself to 100; the event is rejected. Events built on it (prev_events = the
    rejected one) see the state before it, an event citing it among its auth_events is
    rejected (rule 3.3 in v12), and it never enters the room's state."""
    before = await _state_content(peyvand_client, room, "m.room.power_levels")
    content = dict(fake.state_event(room.room_id, "m.room.power_levels")["content"])
    content["users"] = {**content.get("users", {}), room.bob: 100}
    power = fake.make_pdu(None, room.room_id, room.bob, "m.room.power_levels", content, "")
    status, answer = await fake.send_pdus([power])
    assert status == 200
    assert "error" in answer["pdus"][power.event_id], answer

    # On top of the rejected event: a message (fine: bob is joined in the state before it)
    # and a name change (bob has no power there), once with the rejected event as an auth
    # event.
    on_top = _message(fake, room, "after the rejected power levels", prev_events=[power.event_id])
    name_by_rejected = fake.make_pdu(
        None,
        room.room_id,
        room.bob,
        "m.room.name",
        {"name": "pwned by rejected power"},
        "",
        prev_events=[power.event_id],
        auth_events=sorted(
            [power.event_id, fake.rooms[room.room_id].state[("m.room.member", room.bob)]]
        ),
    )
    name_on_top = fake.make_pdu(
        None,
        room.room_id,
        room.bob,
        "m.room.name",
        {"name": "pwned on top"},
        "",
        prev_events=[power.event_id],
    )
    status, answer = await fake.send_pdus([on_top, name_by_rejected, name_on_top])
    assert status == 200
    assert answer["pdus"][on_top.event_id] == {}, answer
    assert "error" in answer["pdus"][name_by_rejected.event_id], answer
    assert "error" in answer["pdus"][name_on_top.event_id], answer
    await _assert_stored(peyvand_client, room, on_top.event_id)
    await _assert_not_stored(
        peyvand_client, room, power.event_id, name_by_rejected.event_id, name_on_top.event_id
    )
    assert await _state_content(peyvand_client, room, "m.room.power_levels") == before
    assert await _state_content(peyvand_client, room, "m.room.name") == {"name": "original"}
    _no_unhandled_error(new_log())


async def test_rejected_name_never_becomes_the_room_name(
    fake: FakeServer,
    room: Room,
    peyvand_client: MatrixClient,
    new_log: Callable[[], str],
) -> None:
    """Authorization rules (state events need ``state_default``) and "Rejection": bob's
    m.room.name is rejected; an event built on it is accepted but the rejected name never
    becomes the room's name, and Peyvand's next event does not build on the rejected one."""
    name = fake.make_pdu(None, room.room_id, room.bob, "m.room.name", {"name": "pwned"}, "")
    status, answer = await fake.send_pdus([name])
    assert status == 200
    assert "error" in answer["pdus"][name.event_id], answer
    on_top = _message(fake, room, "built on the rejected name", prev_events=[name.event_id])
    status, answer = await fake.send_pdus([on_top])
    assert (status, answer["pdus"]) == (200, {on_top.event_id: {}})
    await _assert_stored(peyvand_client, room, on_top.event_id)
    await _assert_not_stored(peyvand_client, room, name.event_id)
    assert await _state_content(peyvand_client, room, "m.room.name") == {"name": "original"}

    sent = (
        await peyvand_client.request(
            "PUT",
            f"rooms/{q(room.room_id)}/send/m.room.message/t{next(_names)}",
            json={"msgtype": "m.text", "body": "from alice"},
            token=room.alice,
        )
    ).ok()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        pdu = await fake.wait_for_pdu(lambda p: p.get("content", {}).get("body") == "from alice")
    assert name.event_id not in pdu["prev_events"]
    assert name.event_id not in pdu["auth_events"]
    assert sent["event_id"] in fake.events
    assert await _state_content(peyvand_client, room, "m.room.name") == {"name": "original"}
    _no_unhandled_error(new_log())


@pytest.mark.parametrize("intruder", ["rejected event", "event of another room"])
async def test_state_from_state_ids_never_brings_in_rejected_or_foreign_events(
    fake: FakeServer,
    room: Room,
    peyvand_client: MatrixClient,
    new_log: Callable[[], str],
    intruder: str,
) -> None:
    """Server-Server API, "Rejection": the state used for later events is "calculated as normal,
    except not updating with the rejected event where it is a state event"; and the room's state
    only ever holds events of that room. The fake sends an event whose prev event Peyvand lacks,
    and answers /state_ids at that prev event with the room's state plus a rejected m.room.topic
    (or the m.room.topic of another Peyvand room): it must never become the room's topic."""
    if intruder == "rejected event":
        topic = fake.make_pdu(None, room.room_id, room.bob, "m.room.topic", {"topic": "pwned"}, "")
        status, answer = await fake.send_pdus([topic])
        assert "error" in answer["pdus"][topic.event_id], answer
        bad_id = topic.event_id
    else:
        other = (
            await peyvand_client.request(
                "POST",
                "createRoom",
                json={"preset": "public_chat", "topic": "pwned"},
                token=room.alice,
            )
        ).ok()["room_id"]
        event = (
            await peyvand_client.request(
                "GET",
                f"rooms/{q(other)}/state/m.room.topic",
                token=room.alice,
                params={"format": "event"},
            )
        ).ok()
        bad_id = event["event_id"]
    assert await _state_content(peyvand_client, room, "m.room.topic") == 404

    state_ids = sorted(fake.rooms[room.room_id].state.values())
    gap = _message(fake, room, "the event Peyvand lacks")
    latest = _message(fake, room, "after the gap", prev_events=[gap.event_id])

    def answer_state_ids(request: FakeRequest) -> tuple[int, Any]:
        if request.query.get("event_id") != [gap.event_id]:
            return 404, {"errcode": "M_NOT_FOUND", "error": "no"}
        return 200, {"pdu_ids": [*state_ids, bad_id], "auth_chain_ids": state_ids}

    fake.on("GET", f"{FEDERATION_V1}/state_ids/{{room_id}}", answer_state_ids)
    async with asyncio.timeout(TIMEOUT_SECONDS):
        status, answer = await fake.send_pdus([latest])
    assert status == 200, answer
    assert fake.requests("GET", f"{FEDERATION_V1}/state_ids/")  # the path under test ran
    assert await _state_content(peyvand_client, room, "m.room.topic") == 404
    assert bad_id not in {e["event_id"] for e in await _state(peyvand_client, room)}
    # The next event on top of it all still sees no topic.
    if answer["pdus"].get(latest.event_id) == {}:
        after = _message(fake, room, "later")
        status, answer = await fake.send_pdus([after])
        assert (status, answer["pdus"]) == (200, {after.event_id: {}})
    assert await _state_content(peyvand_client, room, "m.room.topic") == 404
    _no_unhandled_error(new_log())


# -- content hashes ----------------------------------------------------------------------------


async def test_content_hash_mismatch_is_stored_redacted(
    fake: FakeServer, room: Room, peyvand_client: MatrixClient, new_log: Callable[[], str]
) -> None:
    """Server-Server API, "Checks performed on receipt of a PDU" step 3: an event whose content
    hash does not match (content changed after signing; the signature, over the redacted event,
    still holds) is redacted before being processed further: stored with its content stripped."""
    pdu = _message(fake, room, "original body")
    data = dict(pdu.data)
    data["content"] = {"msgtype": "m.text", "body": "tampered body"}
    status, answer = await fake.send_pdus([data])
    assert (status, answer["pdus"]) == (200, {pdu.event_id: {}})
    status, event = await _get_event(peyvand_client, room, pdu.event_id)
    assert status == 200, event
    assert event["content"] == {}
    bodies = await _bodies(peyvand_client, room)
    assert "tampered body" not in bodies
    assert "original body" not in bodies
    _no_unhandled_error(new_log())


# -- auth chain bombs --------------------------------------------------------------------------


def _bomb(fake: FakeServer, room: Room, shape: str) -> list[str]:
    """Events the fake serves on /event that reference each other through ``auth_events``
    without end (as far as Peyvand's patience goes): a chain 1000 deep, or a tree 10 wide
    and 3 deep; the IDs of the top ones."""
    room_id = room.room_id
    prev = list(fake.rooms[room_id].extremities)

    def member(auth_events: list[str], depth: int) -> str:
        user = fake.user(f"bomb{next(_names)}")
        return fake.make_pdu(
            None,
            room_id,
            user,
            "m.room.member",
            {"membership": "join"},
            user,
            prev_events=prev,
            auth_events=auth_events,
            depth=depth,
        ).event_id

    if shape == "deep":
        below: list[str] = []
        for depth in range(1, 1001):
            below = [member(below, depth)]
        return below
    level: list[str] = [member([], 1) for _ in range(800)]
    for depth in (2, 3):
        level = [member(level[i : i + 10], depth) for i in range(0, len(level), 10)]
    return level  # 8 tops, 80 below them, 800 below those


@pytest.mark.parametrize("shape", ["deep", "wide"])
async def test_auth_chain_bomb_is_given_up_in_bounded_time(
    fake: FakeServer,
    room: Room,
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    new_log: Callable[[], str],
    shape: str,
) -> None:
    """Server-Server API, "Checks performed on receipt of a PDU" step 4 fetches missing auth
    events; a PDU whose auth_events lead into an endless chain (deep) or an exploding tree
    (wide) of events the origin serves must be given up within bounded time and work, without
    crashing; the room keeps working."""
    tops = _bomb(fake, room, shape)
    normal = fake.auth_events_for(room.room_id, "m.room.message", room.bob, None, {})
    pdu = _message(fake, room, f"bomb {shape}", auth_events=sorted([*normal, *tops]))
    async with asyncio.timeout(TIMEOUT_SECONDS):
        status, answer = await fake.send_pdus([pdu])
    assert status == 200, answer
    assert _not_accepted(answer, pdu.event_id), answer
    fetched = fake.requests("GET", f"{FEDERATION_V1}/event/")
    assert 0 < len(fetched) < 1000  # gave up before the end
    await _assert_not_stored(peyvand_client, room, pdu.event_id)

    after = _message(fake, room, f"after the {shape} bomb")
    async with asyncio.timeout(TIMEOUT_SECONDS):
        status, answer = await fake.send_pdus([after])
    assert (status, answer["pdus"]) == (200, {after.event_id: {}})
    assert peyvand.running
    _no_unhandled_error(new_log())


async def test_missing_events_bomb_is_given_up_in_bounded_time(
    fake: FakeServer,
    room: Room,
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    new_log: Callable[[], str],
) -> None:
    """Server-Server API, "Checks performed on receipt of a PDU" (filling gaps with
    /get_missing_events): a PDU whose prev event is missing, from an origin that answers every
    /get_missing_events with a fresh event whose own prev event is missing again (a DAG without
    bottom), must be given up within bounded time and requests, without crashing; the room keeps
    working."""
    version = fake.rooms[room.room_id].room_version
    auth_events = fake.auth_events_for(room.room_id, "m.room.message", room.bob, None, {})
    depth = fake.rooms[room.room_id].depth
    ids: dict[str, str] = {}

    def orphan(body: str) -> dict[str, Any]:
        missing = fake.make_pdu(None, room.room_id, room.bob, "m.room.message", {"body": body})
        del fake.events[missing.event_id]  # never served: its ID is a hole in the DAG
        event = fake.event_template(
            room.room_id, room.bob, "m.room.message", {"msgtype": "m.text", "body": body}
        )
        event.update(prev_events=[missing.event_id], auth_events=auth_events, depth=depth + 2)
        event_id, raw = fake.raw_pdu(version, event)
        ids[body] = event_id
        return raw

    defused = False

    def endless(request: FakeRequest) -> tuple[int, Any]:
        return 200, {"events": [] if defused else [orphan(f"fresh {next(_names)}")]}

    fake.on("POST", f"{FEDERATION_V1}/get_missing_events/{{room_id}}", endless)
    bomb = orphan("bomb")
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            status, answer = await fake.send_pdus([bomb])
    finally:
        defused = True  # whatever happened, let Peyvand wind down before the next test
    assert status == 200, answer
    assert _not_accepted(answer, ids["bomb"]), answer
    asked = fake.requests("POST", f"{FEDERATION_V1}/get_missing_events/")
    assert 0 < len(asked) <= 50, f"{len(asked)} /get_missing_events requests for one PDU"
    await _assert_not_stored(peyvand_client, room, ids["bomb"])

    after = _message(fake, room, "after the missing events bomb")
    async with asyncio.timeout(TIMEOUT_SECONDS):
        status, answer = await fake.send_pdus([after])
    assert (status, answer["pdus"]) == (200, {after.event_id: {}})
    assert peyvand.running
    _no_unhandled_error(new_log())


# -- unknown rooms -------------------------------------------------------------------------------


async def test_pdu_for_an_unknown_room_is_ignored(
    fake: FakeServer, room: Room, peyvand_client: MatrixClient, new_log: Callable[[], str]
) -> None:
    """Server-Server API, "Transactions": a PDU for a room this server is not in is ignored,
    without an error for the transaction, without fetching anything about that room, and the
    rest of the transaction is processed."""
    version = fake.rooms[room.room_id].room_version
    unknown_room = f"!nowhere{next(_names)}:{fake.server_name}"
    stranger = fake.make_pdu(
        version,
        unknown_room,
        room.bob,
        "m.room.message",
        {"msgtype": "m.text", "body": "elsewhere"},
        prev_events=[fake.rooms[room.room_id].extremities[0]],
        auth_events=[],
        depth=5,
    )
    # A v10-style room ID is no room of a v12 room; also try one shaped like a v12 ID.
    v12_like = "!" + stranger.event_id[1:]
    _, raw_v12_like = fake.raw_pdu(version, {**stranger.data, "room_id": v12_like})
    control = _message(fake, room, "known room")
    status, answer = await fake.send_pdus([stranger, raw_v12_like, control])
    assert status == 200, answer
    assert answer["pdus"].get(control.event_id) == {}
    assert answer["pdus"].get(stranger.event_id) in (None, {})
    for room_id in (unknown_room, v12_like):
        assert not [r for r in fake.received if room_id in r.path or stranger.event_id in r.path]
        response = await peyvand_client.request(
            "GET", f"rooms/{q(room_id)}/messages", token=room.alice
        )
        assert response.status in (403, 404), response.body
    assert "elsewhere" not in await _bodies(peyvand_client, room)
    _no_unhandled_error(new_log())
