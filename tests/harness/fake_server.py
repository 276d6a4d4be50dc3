"""A minimal fake homeserver for federation tests: it talks to a real Peyvand and lets a
test say exactly what goes over the wire.

Server side: an aiohttp HTTPS server on 127.0.0.1 (an ephemeral port, a self-signed
certificate), server name ``127.0.0.1:<port>``, its own ed25519 key published (correctly
self-signed) at ``GET /_matrix/key/v2/server``. Every request it receives is recorded in
``received`` (``FakeRequest``: method, path, query, parsed body, the X-Matrix origin), so a
test can see what Peyvand sends it. Default handlers:

- ``PUT /_matrix/federation/v1/send/{txn_id}``: answers ``{"pdus": {id: {}}}`` and tracks
  the PDUs of rooms it knows (state, forward extremities), so later events fit on top;
- ``GET /_matrix/federation/v1/event/{event_id}``: from ``events`` (every event the fake
  made, received or learned through a join), else 404;
- ``POST /_matrix/federation/v1/get_missing_events/{room_id}``: ``{"events": []}``;
- ``GET /_matrix/federation/v1/state_ids/{room_id}``: 404;
- ``PUT /_matrix/federation/v2/invite/{room_id}/{event_id}``: the invite, countersigned.

``on(method, pattern, handler)`` replaces or adds a handler (``pattern`` with ``{name}``
placeholders for one path segment each; the latest registration wins). A handler gets the
``FakeRequest`` and returns ``(status, json)``, directly or as an awaitable.

Client side: ``request`` sends X-Matrix-signed requests to Peyvand's federation port (no
certificate verification; the signature covers exactly the path and query sent).
``make_pdu`` builds and signs events as this server (auth events and prev events chosen from
what it knows of the room unless given); ``raw_pdu`` hashes and signs an arbitrary event dict
without any validation (for malformed events); ``join`` runs make_join / send_join v2 and
remembers the room's state and auth chain; ``send_pdus`` sends a transaction.

Use it as ``async with FakeServer(tmp_path, peer=peyvand.server_name) as fake: ...``.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web
from yarl import URL

from peyvand.events.auth import auth_types_for_event
from peyvand.events.builder import build_pdu, finalize_pdu
from peyvand.events.hashes import add_content_hash, compute_event_id
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from peyvand.events.signing import (
    SigningKey,
    generate_signing_key,
    key_id,
    sign_event,
    sign_json,
    verify_key_base64,
)
from peyvand.federation.request_auth import authorization_header, parse_authorization
from peyvand.federation.tls import generate_self_signed, server_ssl_context
from peyvand.types import EventID, RoomID, ServerName, UserID

FEDERATION_V1 = "/_matrix/federation/v1"
FEDERATION_V2 = "/_matrix/federation/v2"
KEY_VALIDITY_MS = 24 * 3600 * 1000
REQUEST_TIMEOUT_SECONDS = 30
SUPPORTED_ROOM_VERSIONS = ("10", "11", "12")

JsonResult = tuple[int, Any]
Handler = Callable[["FakeRequest"], JsonResult | Awaitable[JsonResult]]

_txn_ids = itertools.count(1)
_key_versions = itertools.count(1)


def new_signing_key(version: str | None = None) -> SigningKey:
    """A fresh ed25519 signing key (``ed25519:<version>``)."""
    return generate_signing_key(version or f"fake{next(_key_versions)}")


def q(value: str) -> str:
    """One percent-encoded path segment (room IDs, user IDs, event IDs)."""
    return quote(value, safe="")


def encode_json(value: Any) -> bytes:
    """JSON as sent on the wire: any Python int, floats and U+0000 allowed (the fake must be
    able to send what a careful server would never produce)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class FakeRequest:
    """One request the fake server received."""

    method: str
    path: str  # decoded path, without the query
    raw_path: str  # as on the request line, with the query
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: Any  # parsed JSON, or None
    origin: str | None  # the X-Matrix origin claimed (not verified)
    params: dict[str, str] = field(default_factory=dict)  # the handler's {placeholders}


@dataclass(slots=True)
class FakeRoom:
    """What the fake server knows of a room: its state and forward extremities."""

    room_id: str
    room_version: RoomVersion
    state: dict[StateKey, str]
    extremities: list[str]
    depth: int


class _Route:
    def __init__(self, method: str, pattern: str, handler: Handler) -> None:
        self.method = method.upper()
        parts = re.split(r"(\{[A-Za-z_]+\})", pattern)
        regex = "".join(
            f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") and p.endswith("}") else re.escape(p)
            for p in parts
        )
        self.regex = re.compile(f"^{regex}$")
        self.handler = handler


class FakeServer:
    """A fake homeserver on 127.0.0.1 with its own server name and key; see the module
    docstring."""

    def __init__(self, directory: Path, *, peer: ServerName | None = None) -> None:
        """``directory`` holds its TLS certificate; ``peer`` is the default destination of
        ``request`` (the Peyvand under test, ``HomeserverProcess.server_name``)."""
        self.directory = directory
        self.peer = peer
        self.signing_key = new_signing_key()
        self.key_id = key_id(self.signing_key)
        self.port = 0
        self.server_name = ServerName("")
        self.received: list[FakeRequest] = []
        self.events: dict[str, dict[str, Any]] = {}
        self.rooms: dict[str, FakeRoom] = {}
        self._routes: list[_Route] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._received_event = asyncio.Event()
        self._install_default_routes()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        cert, key = self.directory / "fake-tls.crt", self.directory / "fake-tls.key"
        generate_self_signed(cert, key, ["127.0.0.1", "localhost"])
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=server_ssl_context(cert, key))
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.server_name = ServerName(f"127.0.0.1:{self.port}")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=False, force_close=True)
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def user(self, localpart: str) -> str:
        """A user ID on this server."""
        return f"@{localpart}:{self.server_name}"

    # -- serving -----------------------------------------------------------------------

    def on(self, method: str, pattern: str, handler: Handler) -> None:
        """Answer ``method pattern`` with ``handler`` (replacing an earlier handler)."""
        self._routes.insert(0, _Route(method, pattern, handler))

    def key_document(self) -> dict[str, Any]:
        """GET /_matrix/key/v2/server: this server's key, signed with it."""
        return sign_json(
            {
                "server_name": self.server_name,
                "verify_keys": {self.key_id: {"key": verify_key_base64(self.signing_key)}},
                "old_verify_keys": {},
                "valid_until_ts": int(time.time() * 1000) + KEY_VALIDITY_MS,
            },
            self.server_name,
            self.signing_key,
        )

    async def _dispatch(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body: Any = None
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        origin = None
        header = request.headers.get("Authorization")
        if header is not None:
            try:
                origin = parse_authorization(header).origin
            except ValueError:
                origin = None
        query = {key: request.query.getall(key) for key in request.query}
        for route in self._routes:
            if route.method != request.method:
                continue
            match = route.regex.match(request.path)
            if match is None:
                continue
            seen = FakeRequest(
                request.method,
                request.path,
                request.raw_path,
                query,
                dict(request.headers),
                body,
                origin,
                match.groupdict(),
            )
            self._record(seen)
            result = route.handler(seen)
            status, answer = await result if inspect.isawaitable(result) else result
            return web.Response(
                status=status, body=encode_json(answer), content_type="application/json"
            )
        self._record(FakeRequest(request.method, request.path, request.raw_path, query,
                                 dict(request.headers), body, origin))  # fmt: skip
        return web.Response(
            status=404,
            body=encode_json({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}),
            content_type="application/json",
        )

    def _record(self, seen: FakeRequest) -> None:
        self.received.append(seen)
        self._received_event.set()

    def _install_default_routes(self) -> None:
        self.on("GET", "/_matrix/key/v2/server", lambda _: (200, self.key_document()))
        self.on("GET", "/_matrix/key/v2/server/{key_id}", lambda _: (200, self.key_document()))
        self.on("GET", f"{FEDERATION_V1}/version", lambda _: (200, {"server": {"name": "fake"}}))
        self.on("PUT", f"{FEDERATION_V1}/send/{{txn_id}}", self._on_send)
        self.on("GET", f"{FEDERATION_V1}/event/{{event_id}}", self._on_event)
        self.on(
            "POST",
            f"{FEDERATION_V1}/get_missing_events/{{room_id}}",
            lambda _: (200, {"events": []}),
        )
        self.on(
            "GET",
            f"{FEDERATION_V1}/state_ids/{{room_id}}",
            lambda _: (404, {"errcode": "M_NOT_FOUND", "error": "no state here"}),
        )
        self.on("PUT", f"{FEDERATION_V2}/invite/{{room_id}}/{{event_id}}", self._on_invite)

    def _on_send(self, request: FakeRequest) -> JsonResult:
        body = request.body if isinstance(request.body, dict) else {}
        results: dict[str, Any] = {}
        for raw in body.get("pdus", []):
            room_id = raw.get("room_id") if isinstance(raw, dict) else None
            room = self.rooms.get(room_id) if isinstance(room_id, str) else None
            if room is None:
                continue
            pdu = self.remember(raw, room.room_version)
            self.track(pdu)
            results[pdu.event_id] = {}
        return 200, {"pdus": results}

    def _on_event(self, request: FakeRequest) -> JsonResult:
        event = self.events.get(request.params["event_id"])
        if event is None:
            return 404, {"errcode": "M_NOT_FOUND", "error": "Unknown event"}
        return 200, {
            "origin": self.server_name,
            "origin_server_ts": int(time.time() * 1000),
            "pdus": [event],
        }

    def _on_invite(self, request: FakeRequest) -> JsonResult:
        body = request.body if isinstance(request.body, dict) else {}
        version = KNOWN_ROOM_VERSIONS.get(str(body.get("room_version")))
        event = body.get("event")
        if version is None or not isinstance(event, dict):
            return 400, {"errcode": "M_BAD_JSON", "error": "bad invite"}
        signed = sign_event(event, version, self.server_name, self.signing_key)
        return 200, {"event": signed}

    # -- what was received -------------------------------------------------------------

    def requests(self, method: str | None = None, prefix: str = "") -> list[FakeRequest]:
        """The requests received so far, optionally only ``method`` ones under ``prefix``."""
        return [
            r
            for r in self.received
            if (method is None or r.method == method) and r.path.startswith(prefix)
        ]

    def received_pdus(self) -> list[dict[str, Any]]:
        """Every PDU that arrived in a /send transaction, in order."""
        pdus: list[dict[str, Any]] = []
        for seen in self.requests("PUT", f"{FEDERATION_V1}/send/"):
            if isinstance(seen.body, dict) and isinstance(seen.body.get("pdus"), list):
                pdus.extend(p for p in seen.body["pdus"] if isinstance(p, dict))
        return pdus

    async def wait_for_pdu(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first PDU received through /send for which ``predicate`` holds, waiting for
        it as long as it takes (the caller bounds the time)."""
        while True:
            self._received_event.clear()
            for pdu in self.received_pdus():
                if predicate(pdu):
                    return pdu
            await self._received_event.wait()

    # -- the client side ---------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        destination: ServerName | None = None,
        sign: bool = True,
        query: Mapping[str, str | Sequence[str]] | None = None,
        authorization: str | None = None,
        origin: ServerName | None = None,
        signing_key: SigningKey | None = None,
        connect_to: str | None = None,
    ) -> tuple[int, Any]:
        """Send one federation request; ``(status, parsed JSON or text)``.

        ``path`` must already be percent-encoded (``q()`` per parameter). The request is
        signed as ``origin`` (default: this server) with ``signing_key`` (default: this
        server's key) for ``destination`` (default: ``peer``), over exactly the path and
        query string sent; ``authorization`` replaces the header altogether. It goes to
        ``https://<connect_to or destination>``.
        """
        if self._session is None:
            raise RuntimeError("the fake server is not started")
        destination = destination or self.peer
        if destination is None:
            raise ValueError("no destination")
        uri = path + ("?" + urlencode(query, doseq=True) if query else "")
        headers = {}
        if authorization is not None:
            headers["Authorization"] = authorization
        elif sign:
            headers["Authorization"] = authorization_header(
                origin or self.server_name,
                signing_key or self.signing_key,
                destination,
                method,
                uri,
                body,
            )
        data = None
        if body is not None:
            data = encode_json(body)
            headers["Content-Type"] = "application/json"
        url = URL(f"https://{connect_to or destination}{uri}", encoded=True)
        async with self._session.request(
            method,
            url,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
        ) as response:
            text = await response.text()
            try:
                answer: Any = json.loads(text) if text else None
            except ValueError:
                answer = text
            return response.status, answer

    async def send_transaction(
        self,
        body: Any,
        *,
        txn_id: str | None = None,
        destination: ServerName | None = None,
    ) -> tuple[int, Any]:
        """PUT /send/{txnId} with ``body`` exactly as given."""
        txn_id = txn_id or f"fake-{self.port}-{next(_txn_ids)}"
        return await self.request(
            "PUT", f"{FEDERATION_V1}/send/{q(txn_id)}", body, destination=destination
        )

    async def send_pdus(
        self,
        pdus: Iterable[Pdu | Mapping[str, Any]],
        edus: Iterable[Mapping[str, Any]] = (),
        *,
        txn_id: str | None = None,
        destination: ServerName | None = None,
        track: bool = True,
    ) -> tuple[int, Any]:
        """A transaction of ``pdus`` (``Pdu`` or raw JSON) and ``edus``. With ``track``,
        every ``Pdu`` the answer accepts (``{}``) moves the fake's view of its room on."""
        pdu_list = list(pdus)
        body = {
            "origin": self.server_name,
            "origin_server_ts": int(time.time() * 1000),
            "pdus": [dict(p.data) if isinstance(p, Pdu) else dict(p) for p in pdu_list],
            "edus": [dict(e) for e in edus],
        }
        status, answer = await self.send_transaction(body, txn_id=txn_id, destination=destination)
        if track and status == 200 and isinstance(answer, dict):
            results = answer.get("pdus", {})
            for pdu in pdu_list:
                if isinstance(pdu, Pdu) and results.get(pdu.event_id) == {}:
                    self.track(pdu)
        return status, answer

    # -- events ------------------------------------------------------------------------

    def remember(self, raw: Mapping[str, Any], room_version: RoomVersion) -> Pdu:
        """Keep an event (served on /event); its ``Pdu``."""
        data = {k: v for k, v in raw.items() if k != "unsigned"}
        event_id = compute_event_id(data, room_version)
        self.events[event_id] = data
        return Pdu(data, event_id, room_version)

    def track(self, pdu: Pdu) -> None:
        """Move the fake's view of the room on: ``pdu`` is in the room's DAG."""
        self.events.setdefault(pdu.event_id, dict(pdu.data))
        room = self.rooms.get(pdu.room_id)
        if room is None:
            return
        if pdu.is_state():
            room.state[pdu.state_tuple] = pdu.event_id
        prevs = set(pdu.prev_event_ids)
        room.extremities = [e for e in room.extremities if e not in prevs] + [pdu.event_id]
        room.depth = max(room.depth, pdu.depth)

    def auth_events_for(
        self,
        room_id: str,
        event_type: str,
        sender: str,
        state_key: str | None,
        content: Mapping[str, Any],
    ) -> list[str]:
        """The auth events the selection algorithm picks from the fake's view of the room."""
        room = self.rooms[room_id]
        wanted = auth_types_for_event(room.room_version, event_type, sender, state_key, content)
        return sorted(room.state[k] for k in wanted if k in room.state)

    def state_event(self, room_id: str, event_type: str, state_key: str = "") -> dict[str, Any]:
        """The fake's current view of one state event of a room."""
        return self.events[self.rooms[room_id].state[(event_type, state_key)]]

    def make_pdu(
        self,
        room_version: RoomVersion | None,
        room_id: str,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
        *,
        prev_events: Sequence[str] | None = None,
        auth_events: Sequence[str] | None = None,
        depth: int | None = None,
        origin_server_ts: int | None = None,
        redacts: str | None = None,
        origin: ServerName | None = None,
        signing_key: SigningKey | None = None,
    ) -> Pdu:
        """A signed event built as this server (``build_pdu``), kept to be served on /event.

        Unless given: the room version, prev events (the forward extremities), auth events
        (the selection algorithm over the current state) and depth (one more than the
        deepest prev event) come from the fake's view of the room. ``origin`` and
        ``signing_key`` sign as another server (or with another key)."""
        room = self.rooms.get(room_id)
        version = room_version or (room.room_version if room is not None else None)
        if version is None:
            raise ValueError(f"the room version of {room_id} is unknown here")
        if prev_events is None:
            prev_events = list(room.extremities) if room is not None else []
        if auth_events is None:
            auth_events = self.auth_events_for(room_id, event_type, sender, state_key, content)
        if depth is None:
            depths = [self._depth(e) for e in prev_events]
            depth = max((d for d in depths if d is not None), default=0) + 1
        pdu = build_pdu(
            version,
            room_id=RoomID(room_id),
            event_type=event_type,
            sender=UserID(sender),
            content=content,
            state_key=state_key,
            prev_events=[EventID(e) for e in prev_events],
            auth_events=[EventID(e) for e in auth_events],
            depth=depth,
            origin_server_ts=origin_server_ts or int(time.time() * 1000),
            redacts=EventID(redacts) if redacts is not None else None,
            origin_server_name=origin or self.server_name,
            signing_key=signing_key or self.signing_key,
        )
        self.events[pdu.event_id] = dict(pdu.data)
        return pdu

    def make_invite(self, room_id: str, sender: str, invitee: str) -> Pdu:
        """An invite of ``invitee`` by ``sender`` into a fresh version-11 room of this
        server's, right after the room's create event (neither kept in ``rooms``)."""
        version = KNOWN_ROOM_VERSIONS["11"]
        create = self.make_pdu(
            version, room_id, sender, "m.room.create", {"room_version": "11"}, "",
            prev_events=[], auth_events=[], depth=1,
        )  # fmt: skip
        return self.make_pdu(
            version, room_id, sender, "m.room.member", {"membership": "invite"}, invitee,
            prev_events=[create.event_id], auth_events=[create.event_id], depth=2,
        )  # fmt: skip

    def raw_pdu(
        self,
        room_version: RoomVersion,
        event: Mapping[str, Any],
        *,
        origin: ServerName | None = None,
        signing_key: SigningKey | None = None,
        remember: bool = True,
    ) -> tuple[str, dict[str, Any]]:
        """``(event ID, JSON)``: ``event`` with its content hash and this server's
        signature added, nothing checked (floats, huge integers and U+0000 go through)."""
        data = {k: v for k, v in event.items() if k not in ("hashes", "signatures")}
        signed = sign_event(
            add_content_hash(data),
            room_version,
            origin or self.server_name,
            signing_key or self.signing_key,
        )
        event_id = compute_event_id(signed, room_version)
        if remember:
            self.events[event_id] = signed
        return event_id, signed

    def event_template(
        self, room_id: str, sender: str, event_type: str, content: Any
    ) -> dict[str, Any]:
        """An unsigned event dict on top of the room as the fake sees it (for ``raw_pdu``)."""
        room = self.rooms[room_id]
        return {
            "room_id": room_id,
            "type": event_type,
            "sender": sender,
            "content": content,
            "prev_events": list(room.extremities),
            "auth_events": self.auth_events_for(room_id, event_type, sender, None, {}),
            "depth": room.depth + 1,
            "origin_server_ts": int(time.time() * 1000),
        }

    def _depth(self, event_id: str) -> int | None:
        event = self.events.get(event_id)
        depth = event.get("depth") if event is not None else None
        return depth if isinstance(depth, int) else None

    # -- joining -----------------------------------------------------------------------

    async def make_join(
        self, room_id: str, user_id: str, *, destination: ServerName | None = None
    ) -> tuple[int, Any]:
        """GET /make_join for ``user_id`` (every room version the fake speaks)."""
        return await self.request(
            "GET",
            f"{FEDERATION_V1}/make_join/{q(room_id)}/{q(user_id)}",
            query={"ver": list(SUPPORTED_ROOM_VERSIONS)},
            destination=destination,
        )

    async def send_join(
        self,
        room_id: str,
        event: Pdu | Mapping[str, Any],
        *,
        event_id: str | None = None,
        destination: ServerName | None = None,
    ) -> tuple[int, Any]:
        """PUT /send_join v2 of ``event`` to ``/send_join/{room_id}/{event_id}``."""
        if isinstance(event, Pdu):
            event_id = event_id or event.event_id
            event = event.data
        if event_id is None:
            raise ValueError("event_id is needed for a raw event")
        return await self.request(
            "PUT",
            f"{FEDERATION_V2}/send_join/{q(room_id)}/{q(event_id)}",
            dict(event),
            destination=destination,
        )

    def join_event(
        self,
        template: Mapping[str, Any],
        *,
        origin: ServerName | None = None,
        signing_key: SigningKey | None = None,
    ) -> Pdu:
        """The join from a make_join answer, filled in and signed (as this server unless
        ``origin``/``signing_key`` say otherwise)."""
        version = KNOWN_ROOM_VERSIONS[template["room_version"]]
        event = dict(template["event"])
        event["origin_server_ts"] = int(time.time() * 1000)
        return finalize_pdu(
            event,
            version,
            origin_server_name=origin or self.server_name,
            signing_key=signing_key or self.signing_key,
        )

    async def join(
        self, room_id: str, user_id: str, *, destination: ServerName | None = None
    ) -> dict[str, Any]:
        """Join ``user_id`` (of this server) to a room of ``destination`` (make_join, then
        send_join v2); the send_join answer. The room's state and auth chain from it become
        the fake's view of the room. Fails the test unless both steps answer 200."""
        status, template = await self.make_join(room_id, user_id, destination=destination)
        assert status == 200, f"make_join: {status} {template}"
        join = self.join_event(template)
        status, answer = await self.send_join(room_id, join, destination=destination)
        assert status == 200, f"send_join: {status} {answer}"
        self.install_room(room_id, join, answer)
        return dict(answer)

    def install_room(self, room_id: str, join: Pdu, answer: Mapping[str, Any]) -> FakeRoom:
        """Remember a room from a send_join answer: its events, its state plus ``join``."""
        version = join.room_version
        state: dict[StateKey, str] = {}
        for raw in answer.get("auth_chain", []):
            self.remember(raw, version)
        for raw in answer.get("state", []):
            pdu = self.remember(raw, version)
            if pdu.is_state():
                state[pdu.state_tuple] = pdu.event_id
        room = FakeRoom(room_id, version, state, [], 0)
        self.rooms[room_id] = room
        self.track(join)
        return room
