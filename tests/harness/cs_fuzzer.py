"""A time-boxed fuzzer of the Client-Server API, on schemathesis and Hypothesis.

Every operation of the spec's OpenAPI (``openapi_spec.load_client_server_api``) is driven
in rounds (in a seeded order), in three modes: requests that fit the schema ("positive"),
requests that break it ("negative", schemathesis' own), and fitting requests with one
hostile mutation of ours ("mutated": JSON nested hundreds of levels deep, U+0000 and lone
surrogates in strings, keys, path and query parameters and headers, integers past 2**63,
strings of 70,000 characters, values of the wrong type, bodies that are not JSON). Path
parameters and ID-shaped values often name real objects of a "world" (a registered user
with a second device, a room with a message, a thread, a reaction and a topic, an alias, a
filter, an upload, a key backup, a room of another user), so requests reach past the "not
found" checks; a world lives two rounds, and each round ends with plain reads (sync,
messages, state, profile, account data...) of what it stored.

Every request goes out with the world's access token (a few negative ones with
schemathesis' made-up ``Authorization`` instead); after a request that logged the user out
it logs in again, and a user that is gone (deactivated, password changed) gets a new world.

Each answer of 500 or more, and each "Unhandled error" or other traceback in the server's
log, is a failing ``Finding``; so is a server that stops answering. A request that got no
answer in time, or whose connection was closed while the server still answers others (a
70,000-character header refused early), is a finding that is only reported. Findings are
grouped by operation and by the exception the log names, keeping the smallest request that
showed each.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import random
import re
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core import NOT_SET
from schemathesis.core.result import Err

from harness.openapi_spec import load_client_server_api

PASSWORD = "fuzz: correct horse battery staple"
REQUEST_TIMEOUT_SECONDS = 15.0
CLIENT_V3 = "/_matrix/client/v3"
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", re.M)
MODES = ("positive", "negative", "mutated")

# Long-poll parameters are kept short (unless a mutation makes them huge), so a request
# waits for nothing.
LONG_POLL_PARAMS = frozenset({"timeout", "timeout_ms"})

# Operations left out, and why. Everything else runs: authenticated requests carry the fuzz
# user's token, so logout, deactivation, password and device deletion only touch the
# fuzz user (and the world is rebuilt when they succeed), and real IDs are only ever those
# of the fuzz world, so nothing another test made is addressed on purpose.
EXCLUDED: dict[tuple[str, str], str] = {}


class _OutOfBudget(Exception):
    """The run's time or example budget is spent."""


class WorldBroken(Exception):
    """The fuzz world could not be set up again: the server is down or broken."""


class ServerDown(Exception):
    """The server no longer answers."""


# What fails the run; the other findings (a request without an answer or whose connection
# was closed, with the server still answering others) are only reported.
FAILING_KINDS = frozenset(
    {"5xx", "unhandled error", "background traceback", "server down", "world broken"}
)


@dataclass(slots=True)
class Sent:
    """What was sent, enough to send it again."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    mutation: str

    def size(self) -> int:
        return len(self.url) + len(self.body or b"")

    def describe(self, limit: int = 1000) -> dict[str, Any]:
        body = None
        if self.body is not None:
            body = _clip(self.body.decode("utf-8", errors="backslashreplace"), limit)
        headers = {
            name: _clip(value, 200)
            for name, value in self.headers.items()
            if name.lower() not in _USUAL_HEADERS
        }
        return {
            "method": self.method,
            "url": _clip(self.url, limit),
            "headers": headers,
            "body": body,
            "mutation": self.mutation,
        }


_USUAL_HEADERS = frozenset(
    {"authorization", "user-agent", "accept-encoding", "accept", "connection", "content-length"}
)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _clip_lines(text: str, limit: int = 300) -> str:
    return "\n".join(_clip(line, limit) for line in text.splitlines())


@dataclass(slots=True)
class Finding:
    """One distinct defect: an operation and what went wrong there."""

    kind: str  # "5xx", "unhandled error", "background traceback", "connection", "timeout"
    method: str
    template: str
    signature: str
    status: int | None
    example: Sent
    traceback: str
    count: int = 1

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "fails": self.kind in FAILING_KINDS,
            "operation": f"{self.method} {self.template}",
            "status": self.status,
            "signature": self.signature,
            "count": self.count,
            "request": self.example.describe(),
            "traceback": _clip_lines(self.traceback, 2000),
        }


class LogWatcher:
    """Reads what the server has logged since the last look (through a file handle kept
    open, so the log is still read if the file is deleted or renamed meanwhile)."""

    def __init__(self, path: Path) -> None:
        self._handle = path.open("rb")
        self._handle.seek(0, 2)

    def new_text(self) -> str:
        return self._handle.read().decode("utf-8", errors="replace")

    def close(self) -> None:
        self._handle.close()


def _log_records(text: str) -> list[str]:
    starts = [m.start() for m in LOG_RECORD.finditer(text)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    return [text[a:b] for a, b in itertools.pairwise([*starts, len(text)]) if text[a:b].strip()]


def _is_protocol_error(record: str) -> bool:
    """aiohttp's own log of a request its HTTP parser refused (and answered 400): a line
    too long, a header value with a control character... Not a server defect."""
    return "aiohttp.server: Error handling request" in record and bool(
        re.search(r"^aiohttp\.http_exceptions\.\w+: 400", record, re.M)
    )


def _exception_signature(record: str) -> str:
    """``ExceptionType: message`` of a logged traceback and the innermost frame."""
    lines = [line for line in record.rstrip().splitlines() if line.strip()]
    frames = [line.strip() for line in lines if line.strip().startswith('File "')]
    last = lines[-1].strip() if lines else ""
    exception = re.sub(r"\d+", "N", last.split(":", 1)[0] if ":" in last else last)
    where = ""
    if frames:
        match = re.match(r'File "(.*?)", line \d+, in (.*)', frames[-1])
        if match:
            where = f" at {Path(match.group(1)).name}:{match.group(2)}"
    return f"{exception}{where}"


@dataclass
class World:
    """The fuzz user and real objects for path parameters and ID-shaped values."""

    base_url: str
    session: requests.Session
    user_id: str = ""
    token: str = ""
    device_id: str = ""
    pools: dict[str, list[str]] = field(default_factory=dict)
    stale: bool = True
    generation: int = 0

    def call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = self.base_url + (path if path.startswith("/") else f"{CLIENT_V3}/{path}")
        response = self.session.request(
            method, url, json=body, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS
        )
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text

    def ok(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        status, result = self.call(method, path, body, token or self.token)
        assert status == 200, f"world set-up: {method} {path} gave {status}: {result}"
        return result

    def register(self, localpart: str) -> tuple[str, str, str]:
        body: dict[str, Any] = {"username": localpart, "password": PASSWORD}
        status, result = self.call("POST", "register", body)
        if status == 401 and isinstance(result, dict) and "session" in result:
            body["auth"] = {"type": "m.login.dummy", "session": result["session"]}
            status, result = self.call("POST", "register", body)
        assert status == 200, f"world set-up: register gave {status}: {result}"
        return result["user_id"], result["access_token"], result["device_id"]

    def rebuild(self, run_id: str) -> None:
        """A new fuzz user and objects of its own (the old world may be unusable)."""
        self.generation += 1
        tag = f"{run_id}g{self.generation}"
        self.user_id, self.token, self.device_id = self.register(f"fuzz-{tag}")
        peer_id, peer_token, _ = self.register(f"fuzzpeer-{tag}")
        login = self.ok(
            "POST",
            "login",
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": self.user_id},
                "password": PASSWORD,
            },
        )
        me = quote(self.user_id)
        alias = f"#fuzz-{tag}:localhost"
        room = self.ok(
            "POST",
            "createRoom",
            {"preset": "public_chat", "room_alias_name": f"fuzz-{tag}", "name": "fuzz"},
        )["room_id"]
        self.ok("POST", f"join/{quote(room)}", {}, peer_token)
        message = self._send(room, "m.room.message", {"msgtype": "m.text", "body": "hello"})
        thread = self._send(
            room,
            "m.room.message",
            {
                "msgtype": "m.text",
                "body": "in a thread",
                "m.relates_to": {"rel_type": "m.thread", "event_id": message},
            },
        )
        reaction = self._send(
            room,
            "m.reaction",
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": message, "key": "+1"}},
        )
        topic = self.ok("PUT", f"rooms/{quote(room)}/state/m.room.topic/", {"topic": "fuzzing"})[
            "event_id"
        ]
        state = self.ok("GET", f"rooms/{quote(room)}/state")
        create = next(e["event_id"] for e in state if e["type"] == "m.room.create")
        peer_room = self.ok("POST", "createRoom", {"preset": "private_chat"}, peer_token)["room_id"]
        filter_id = self.ok("POST", f"user/{me}/filter", {"room": {"timeline": {"limit": 5}}})[
            "filter_id"
        ]
        self.ok("PUT", f"user/{me}/rooms/{quote(room)}/tags/u.fuzz", {"order": 0.5})
        self.ok("PUT", f"user/{me}/account_data/org.example.fuzz", {"fuzz": True})
        upload = self.session.post(
            f"{self.base_url}/_matrix/media/v3/upload",
            data=b"fuzz",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "text/plain"},
            timeout=REQUEST_TIMEOUT_SECONDS,
        )
        media = upload.json()["content_uri"] if upload.status_code == 200 else "mxc://localhost/x"
        status, backup = self.call(
            "POST",
            "room_keys/version",
            {
                "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                "auth_data": {"public_key": "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo"},
            },
            self.token,
        )
        backup_version = backup["version"] if status == 200 else "1"
        self.call(
            "PUT",
            "pushrules/global/override/fuzzrule",
            {"actions": ["notify"], "conditions": []},
            self.token,
        )
        self.pools = {
            # Path parameters, by name.
            "roomId": [room, room, peer_room, "!unknown:localhost"],
            "roomIdOrAlias": [room, alias, peer_room, "#unknown:localhost"],
            "roomAlias": [alias, "#unknown:localhost"],
            "userId": [self.user_id, self.user_id, peer_id, "@unknown:localhost"],
            "eventId": [message, thread, reaction, topic, create, "$unknown"],
            "deviceId": [login["device_id"], login["device_id"], self.device_id, "UNKNOWN"],
            "serverName": ["localhost"],
            "mediaId": [media.rsplit("/", 1)[-1], "unknown"],
            "fileName": ["fuzz.txt"],
            "eventType": ["m.room.message", "m.room.topic", "m.room.member", "m.reaction"],
            "stateKey": ["", self.user_id, peer_id],
            "type": ["org.example.fuzz", "m.direct", "m.fully_read", "m.push_rules"],
            "tag": ["u.fuzz", "m.favourite"],
            "kind": ["override", "underride", "sender", "room", "content"],
            "ruleId": ["fuzzrule", ".m.rule.master", ".m.rule.message", room],
            "version": [backup_version, "999"],
            "sessionId": ["fuzzsession"],
            "keyName": ["displayname", "avatar_url", "m.tz", "org.example.fuzz"],
            "filterId": [filter_id, "999"],
            "receiptType": ["m.read", "m.read.private", "m.fully_read"],
            "relType": ["m.thread", "m.annotation", "m.reference"],
            "protocol": ["irc"],
            # Values of the spec's string formats.
            "mx-room-id": [room, peer_room],
            "mx-user-id": [self.user_id, peer_id],
            "mx-event-id": [message, thread, topic],
            "mx-room-alias": [alias],
            "mx-server-name": ["localhost"],
            "mx-mxc-uri": [media],
        }
        self.stale = False

    def _send(self, room: str, event_type: str, content: Any) -> str:
        txn = hashlib.sha1(json.dumps(content).encode()).hexdigest()
        path = f"rooms/{quote(room)}/send/{event_type}/{txn}{self.generation}"
        event_id: str = self.ok("PUT", path, content)["event_id"]
        return event_id

    def log_in_again(self) -> bool:
        """A new token for the same user (after a logout), if it can still log in."""
        status, result = self.call(
            "POST",
            "login",
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": self.user_id},
                "password": PASSWORD,
            },
        )
        if status != 200:
            return False
        self.token, self.device_id = result["access_token"], result["device_id"]
        self.pools["deviceId"] = [*self.pools["deviceId"][:2], self.device_id, "UNKNOWN"]
        self.stale = False
        return True

    def token_works(self) -> bool:
        try:
            status, _ = self.call("GET", "account/whoami", token=self.token)
        except requests.RequestException:
            return False
        return status == 200


# Format strategies: a real object of the world half the time, a made-up value otherwise.
_WORLD: list[World] = []


def _real_or(name: str, made_up: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    def pick(index: int) -> str:
        pool = _WORLD[0].pools.get(name, []) if _WORLD else []
        return pool[index % len(pool)] if pool else "x"

    return st.one_of(st.integers(0, 1000).map(pick), made_up)


def _register_formats() -> None:
    shapes = {
        "mx-room-id": "!{}:localhost",
        "mx-user-id": "@{}:localhost",
        "mx-event-id": "${}",
        "mx-room-alias": "#{}:localhost",
        "mx-server-name": "{}",
        "mx-mxc-uri": "mxc://localhost/{}",
    }
    for name, shape in shapes.items():
        schemathesis.openapi.format(name, _real_or(name, st.text(max_size=30).map(shape.format)))


# Mutations ------------------------------------------------------------------------------

HUGE_INTEGERS = (2**63, 2**64, -(2**63) - 1, 2**53, -(2**53) - 1, 10**100)
ODD_STRINGS = (
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff\ud800",
    "\u202e\ufeff\uffff",
    "\U0001f600" * 20,
    "../../../etc/passwd",
    "%00",
    "%00%2F%2e%2e",
    "%25%",
    "' OR 1=1 --",
    "\\",
    "",
    " ",
)
WRONG_TYPES: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    1.5,
    "",
    "text",
    [],
    {},
    [None],
    {"": None},
    math.nan,
    math.inf,
    -0.0,
    1e308,
)
RAW_BODIES = (
    b"",
    b"{",
    b"null",
    b"[]",
    b'{"a": NaN}',
    b'{"a": 1e999}',
    b"\xff\xfe\x00",
    b'{"a": "\\ud800"}',
    b'{"a": 1, "a": 2}',
    b'{"\\u0000": "\\u0000"}',
)


def nested(depth: int) -> Any:
    """A JSON value ``depth`` levels deep (objects and arrays in turn)."""
    value: Any = "bottom"
    for level in range(depth):
        value = {"a": value} if level % 2 else [value]
    return value


def _locations(
    value: Any, path: tuple[Any, ...] = (), limit: int = 200
) -> Iterator[tuple[Any, ...]]:
    """Paths to the nodes of a JSON value (breadth-first, at most ``limit``)."""
    queue: list[tuple[tuple[Any, ...], Any]] = [(path, value)]
    seen = 0
    while queue and seen < limit:
        where, node = queue.pop(0)
        seen += 1
        yield where
        if isinstance(node, dict):
            queue.extend(((*where, key), child) for key, child in node.items())
        elif isinstance(node, list):
            queue.extend(((*where, index), child) for index, child in enumerate(node))


def _replace(value: Any, path: tuple[Any, ...], new: Callable[[Any], Any]) -> Any:
    if not path:
        return new(value)
    head, rest = path[0], path[1:]
    value[head] = _replace(value[head], rest, new)
    return value


Draw = Callable[[st.SearchStrategy[Any]], Any]


def _value_mutation(draw: Draw) -> tuple[str, str, Callable[[Any], Any]]:
    """A value-changing mutation (of a body value, a path or a query parameter): its kind,
    what it does, and the function that does it."""
    kind = draw(st.sampled_from(["nul", "odd", "huge", "long", "wrong"]))
    if kind == "nul":
        at = draw(st.integers(0, 8))
        return kind, f"U+0000 inserted at {at}", lambda old: f"{old}"[:at] + "\x00" + f"{old}"[at:]
    if kind == "odd":
        odd = draw(st.sampled_from(ODD_STRINGS))
        if draw(st.booleans()):
            return kind, f"{odd!r} appended", lambda old: f"{old}{odd}"
        return kind, f"= {odd!r}", lambda old: odd
    if kind == "huge":
        huge = draw(st.sampled_from(HUGE_INTEGERS))
        return kind, f"= {huge}", lambda old: huge
    if kind == "long":
        length = draw(st.sampled_from([300, 5_000, 70_000]))
        char = draw(st.sampled_from(["a", "\u00e9", "\U0001f600", "\x00", " "]))
        return kind, f"= {char!r} * {length}", lambda old: char * length
    wrong = draw(st.sampled_from(WRONG_TYPES))
    return "wrong type", f"= {wrong!r}", lambda old: copy.deepcopy(wrong)


@dataclass(slots=True)
class Request:
    method: str
    template: str
    path_parameters: dict[str, str]  # unquoted values
    query: dict[str, Any]
    headers: dict[str, str]
    body: Any  # a JSON value, or bytes sent as they are, or NOT_SET
    json_body: bool
    mutation: str = ""
    kind: str = ""


def _mutate(request: Request, draw: Draw) -> None:
    targets = ["body"] * 5 + ["raw"] if request.json_body else []
    if request.path_parameters:
        targets += ["path"] * 2
    targets += ["query"] * 2 + ["header"]
    target = draw(st.sampled_from(targets))
    if target == "raw":
        request.body = draw(st.sampled_from(RAW_BODIES))
        request.json_body = False
        request.headers["Content-Type"] = "application/json"
        request.mutation = f"raw body {request.body!r}"
        request.kind = "raw body"
        return
    if target == "body":
        body = copy.deepcopy(request.body) if request.body is not NOT_SET else {}
        where = draw(st.sampled_from(list(_locations(body))))
        operation = draw(st.sampled_from(["value", "value", "value", "key", "deep"]))
        if operation == "deep":
            depth = draw(st.sampled_from([250, 600]))
            request.body = _replace(body, where, lambda old: nested(depth))
            request.mutation = f"body{list(where)} nested {depth} deep"
            request.kind = "body: deep"
        elif operation == "key":
            key = draw(st.sampled_from(["\x00", "a\x00", "\ud800", "x" * 70_000, ""]))

            def add_key(old: Any) -> Any:
                if isinstance(old, dict):
                    old[key] = "value"
                    return old
                return {key: old}

            request.body = _replace(body, where, add_key)
            request.mutation = f"body{list(where)} gets key {key[:20]!r} ({len(key)} chars)"
            request.kind = "body: odd key"
        else:
            kind, what, change = _value_mutation(draw)
            request.body = _replace(body, where, change)
            request.mutation = f"body{list(where)} {what}"
            request.kind = f"body: {kind}"
        return
    kind, what, change = _value_mutation(draw)
    request.kind = f"{target}: {kind}"
    if target == "path":
        name = draw(st.sampled_from(sorted(request.path_parameters)))
        request.path_parameters[name] = _query_value(change(request.path_parameters[name]))
        request.mutation = f"path {name} {what}"
    elif target == "query":
        name = draw(st.sampled_from([*sorted(request.query), "unknown_param"]))
        request.query[name] = _query_value(change(request.query.get(name, "")))
        request.mutation = f"query {name} {what}"
    else:
        value = _query_value(change("")).encode("utf-8", "surrogatepass").decode("latin-1")
        name = draw(st.sampled_from(["Content-Type", "X-Forwarded-For", "Accept-Language"]))
        request.headers[name] = value
        request.mutation = f"header {name} {what}"


# The run ------------------------------------------------------------------------------


@dataclass
class FuzzResult:
    findings: dict[tuple[str, str, str], Finding]
    requests_sent: int
    examples: dict[str, int]
    statuses: dict[int, int]
    elapsed: float
    operations: int
    rounds: int
    generation_errors: dict[str, str]
    protocol_errors: int
    seconds_per_operation: dict[str, float]
    mutations: dict[str, int]

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings.values() if f.kind in FAILING_KINDS]

    @property
    def notes(self) -> list[Finding]:
        return [f for f in self.findings.values() if f.kind not in FAILING_KINDS]

    def describe(self) -> str:
        lines = [
            f"{self.requests_sent} requests to {self.operations} operations in {self.rounds} "
            f"round(s), {self.elapsed:.0f} s; statuses {dict(sorted(self.statuses.items()))}; "
            f"{self.protocol_errors} refused by aiohttp's HTTP parser; "
            f"examples {self.examples}; mutations {dict(sorted(self.mutations.items()))}",
        ]
        ordered = sorted(
            self.findings.values(),
            key=lambda f: (f.kind not in FAILING_KINDS, f.template, f.method),
        )
        for finding in ordered:
            info = finding.describe()
            mark = "FAIL" if finding.kind in FAILING_KINDS else "note"
            lines.append(
                f"- {mark}: {info['kind']} {info['status']} on {info['operation']} "
                f"({info['count']}x): {info['signature']}"
            )
            lines.append(f"  request: {json.dumps(info['request'], ensure_ascii=True)}")
            if finding.traceback:
                text = _clip_lines(finding.traceback.strip()[-5000:])
                lines.append("  " + text.replace("\n", "\n  "))
        return "\n".join(lines)


class Fuzzer:
    def __init__(
        self,
        base_url: str,
        log_path: Path,
        *,
        seconds: float,
        max_examples: int,
        seed: int,
        examples_per_round: int = 4,
        run_id: str = "",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.seconds = seconds
        self.max_examples = max_examples
        self.seed = seed
        self.examples_per_round = examples_per_round
        self.run_id = run_id or f"{seed}-{int(time.time())}"
        self.session = requests.Session()
        self.world = World(self.base_url, self.session)
        self.log = LogWatcher(log_path)
        self.findings: dict[tuple[str, str, str], Finding] = {}
        self.statuses: dict[int, int] = {}
        self.examples: dict[str, int] = dict.fromkeys(MODES, 0)
        self.generation_errors: dict[str, str] = {}
        self.sent = 0
        self.protocol_errors = 0
        self.mutations: dict[str, int] = {}
        self.seconds_per_operation: dict[str, float] = {}
        self.deadline = 0.0
        self._strategies: dict[tuple[str, str, str], Any] = {}
        schema = schemathesis.openapi.from_dict(load_client_server_api())
        operations: list[Any] = []
        for result in schema.get_all_operations():
            if isinstance(result, Err):
                raise result.err()
            operation = result.ok()
            if (operation.method.upper(), operation.path) not in EXCLUDED:
                operations.append(operation)
        self.operations = sorted(operations, key=lambda op: (op.path, op.method))

    def run(self) -> FuzzResult:
        _register_formats()
        _WORLD[:] = [self.world]
        start = time.monotonic()
        self.deadline = start + self.seconds
        rounds = 0
        try:
            for round_number in itertools.count():
                rounds = round_number + 1
                # A world lives two rounds, so what one round stored the next one reads.
                if round_number % 2 == 0 or self.world.stale:
                    self._rebuild(f"{self.run_id}r{round_number}")
                self._take_log(None)
                order = list(self.operations)
                random.Random(f"{self.seed} {round_number}").shuffle(order)
                for operation in order:
                    for mode in MODES:
                        started = time.monotonic()
                        try:
                            self._fuzz(operation, mode, round_number)
                        finally:
                            key = f"{operation.method.upper()} {operation.path}"
                            spent = self.seconds_per_operation.get(key, 0.0)
                            self.seconds_per_operation[key] = spent + time.monotonic() - started
                self._read_back()
        except (_OutOfBudget, ServerDown):
            pass
        except WorldBroken as exc:
            empty = Sent("-", "-", {}, None, "")
            cause = "".join(traceback.format_exception(exc.__cause__ or exc))
            self.findings["-", "(world set-up)", "world broken"] = Finding(
                "world broken", "-", "(world set-up)", str(exc), None, empty, cause
            )
        finally:
            _WORLD.clear()
            self._take_log(None)
            self.log.close()
            self.session.close()
        return FuzzResult(
            self.findings,
            self.sent,
            self.examples,
            self.statuses,
            time.monotonic() - start,
            len(self.operations),
            rounds,
            self.generation_errors,
            self.protocol_errors,
            self.seconds_per_operation,
            self.mutations,
        )

    def _read_back(self) -> None:
        """Plain reads of what the round stored (the room's timeline and state, account
        data, profile, sync...): a stored value that breaks a later read is a defect too."""
        if self.world.stale:
            self._refresh(f"{self.run_id}rb{self.sent}")
        pools = self.world.pools
        ids = {
            "roomId": pools["roomId"][0],
            "eventId": pools["eventId"][0],
            "userId": self.world.user_id,
            "filterId": pools["filterId"][0],
            "type": "org.example.fuzz",
        }
        v3 = CLIENT_V3
        search = {"search_term": "a", "event_context": {"before_limit": 3, "after_limit": 3}}
        reads: list[tuple[str, str, dict[str, Any], Any]] = [
            ("GET", f"{v3}/sync", {}, NOT_SET),
            ("GET", f"{v3}/sync", {"full_state": "true", "filter": ids["filterId"]}, NOT_SET),
            ("GET", f"{v3}/rooms/{{roomId}}/messages", {"dir": "b", "limit": "100"}, NOT_SET),
            ("GET", f"{v3}/rooms/{{roomId}}/messages", {"dir": "f", "limit": "100"}, NOT_SET),
            ("GET", f"{v3}/rooms/{{roomId}}/state", {}, NOT_SET),
            ("GET", f"{v3}/rooms/{{roomId}}/members", {}, NOT_SET),
            ("GET", f"{v3}/rooms/{{roomId}}/joined_members", {}, NOT_SET),
            ("GET", f"{v3}/rooms/{{roomId}}/initialSync", {}, NOT_SET),
            ("GET", f"{v3}/rooms/{{roomId}}/context/{{eventId}}", {}, NOT_SET),
            ("GET", "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}", {}, NOT_SET),
            ("GET", "/_matrix/client/v1/rooms/{roomId}/threads", {}, NOT_SET),
            ("GET", "/_matrix/client/v1/rooms/{roomId}/hierarchy", {}, NOT_SET),
            ("GET", f"{v3}/initialSync", {}, NOT_SET),
            ("GET", f"{v3}/events", {"timeout": "0"}, NOT_SET),
            ("GET", f"{v3}/profile/{{userId}}", {}, NOT_SET),
            ("GET", f"{v3}/user/{{userId}}/account_data/{{type}}", {}, NOT_SET),
            ("GET", f"{v3}/user/{{userId}}/rooms/{{roomId}}/tags", {}, NOT_SET),
            ("GET", f"{v3}/user/{{userId}}/filter/{{filterId}}", {}, NOT_SET),
            ("GET", f"{v3}/pushrules/", {}, NOT_SET),
            ("GET", f"{v3}/pushers", {}, NOT_SET),
            ("GET", f"{v3}/notifications", {}, NOT_SET),
            ("GET", f"{v3}/joined_rooms", {}, NOT_SET),
            ("GET", f"{v3}/devices", {}, NOT_SET),
            ("GET", f"{v3}/room_keys/version", {}, NOT_SET),
            ("GET", f"{v3}/publicRooms", {}, NOT_SET),
            ("POST", f"{v3}/publicRooms", {}, {"filter": {"generic_search_term": "fuzz"}}),
            ("POST", f"{v3}/user_directory/search", {}, {"search_term": "fuzz"}),
            ("POST", f"{v3}/search", {}, {"search_categories": {"room_events": search}}),
            ("POST", f"{v3}/keys/query", {}, {"device_keys": {self.world.user_id: []}}),
            ("GET", f"{v3}/keys/changes", {"from": "0", "to": "999999"}, NOT_SET),
        ]
        for method, template, query, body in reads:
            names = re.findall(r"{(\w+)}", template)
            headers = {"Authorization": f"Bearer {self.world.token}"}
            if body is not NOT_SET:
                headers["Content-Type"] = "application/json"
            request = Request(
                method,
                template,
                {name: ids[name] for name in names},
                query,
                headers,
                body,
                body is not NOT_SET,
                mutation="read-back",
            )
            self._send(request)

    def _refresh(self, run_id: str) -> None:
        """Log in again after a logout; a new world if the user is gone."""
        try:
            if self.world.log_in_again():
                return
        except requests.RequestException:
            pass
        self._rebuild(run_id)

    def _rebuild(self, run_id: str) -> None:
        try:
            self.world.rebuild(run_id)
        except Exception as exc:
            raise WorldBroken(f"setting up the fuzz world failed: {exc!r}") from exc

    def _strategy(self, operation: Any, mode: str) -> Any:
        key = (operation.method, operation.path, mode)
        if key not in self._strategies:
            negative = mode == "negative"
            generation = GenerationMode.NEGATIVE if negative else GenerationMode.POSITIVE
            self._strategies[key] = operation.as_strategy(generation_mode=generation)
        return self._strategies[key]

    def _fuzz(self, operation: Any, mode: str, round_number: int) -> None:
        key = f"{operation.method.upper()} {operation.path} {mode}"
        try:
            strategy = self._strategy(operation, mode)
        except Exception as exc:
            self.generation_errors.setdefault(key, f"{type(exc).__name__}: {exc}"[:300])
            return
        digest = hashlib.sha256(f"{self.seed} {round_number} {key}".encode()).digest()

        @hypothesis_seed(int.from_bytes(digest[:8], "big"))
        @settings(
            max_examples=self.examples_per_round,
            phases=[Phase.generate],
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        @given(case=strategy, data=st.data())
        def example(case: Any, data: st.DataObject) -> None:
            if time.monotonic() > self.deadline or self.sent >= self.max_examples:
                raise _OutOfBudget
            if self.world.stale:
                self._refresh(f"{self.run_id}r{round_number}s{self.sent}")
            request = self._request(operation, case, data, mode)
            self.examples[mode] += 1
            if mode == "mutated":
                self.mutations[request.kind] = self.mutations.get(request.kind, 0) + 1
            self._send(request)

        try:
            example()
        except (_OutOfBudget, WorldBroken, ServerDown):
            raise
        except Unsatisfiable:
            pass  # nothing to break (a negative request of an operation without inputs)
        except Exception as exc:  # generation trouble: note it, go on with the next
            self.generation_errors.setdefault(key, f"{type(exc).__name__}: {exc}"[:300])

    def _request(self, operation: Any, case: Any, data: st.DataObject, mode: str) -> Request:
        path_parameters = {
            name: _unquote(str(value)) for name, value in (case.path_parameters or {}).items()
        }
        for name in path_parameters:
            pool = self.world.pools.get(name)
            if pool and data.draw(st.booleans(), label=f"real {name}"):
                path_parameters[name] = data.draw(st.sampled_from(pool), label=name)
        query = dict(case.query or {})
        # Long polls wait for nothing: a short timeout, also where the request had none
        # (GET /events waits 30 s by default).
        declared = {parameter.name for parameter in operation.query}
        for name in sorted(LONG_POLL_PARAMS & declared):
            query[name] = data.draw(st.integers(0, 50), label=name)
        headers = {k: str(v) for k, v in (case.headers or {}).items()}
        keep_auth = mode == "negative" and data.draw(st.integers(0, 9), label="auth") == 0
        if not keep_auth:
            headers["Authorization"] = f"Bearer {self.world.token}"
        media_type = case.media_type or ""
        body = case.body
        # Negative generation may give a JSON operation bytes: a body that is not JSON.
        json_body = body is not NOT_SET and "json" in media_type and not isinstance(body, bytes)
        if body is not NOT_SET and not json_body and not isinstance(body, bytes):
            kwargs = case.as_transport_kwargs(base_url=self.base_url)
            body = kwargs.get("data", b"")
            if isinstance(body, str):
                body = body.encode()
            elif not isinstance(body, bytes):
                body = json.dumps(kwargs.get("json")).encode() if "json" in kwargs else b""
        if case.body is not NOT_SET:
            headers.setdefault("Content-Type", media_type or "application/json")
        request = Request(
            operation.method.upper(),
            operation.path,
            path_parameters,
            query,
            headers,
            body,
            json_body,
            mutation=mode,
        )
        if mode == "mutated":
            _mutate(request, data.draw)
        return request

    def _send(self, request: Request) -> None:
        path = request.template
        for name, value in request.path_parameters.items():
            path = path.replace(f"{{{name}}}", _quote(value))
        body: bytes | None = None
        try:
            if request.body is not NOT_SET:
                if request.json_body:
                    body = json.dumps(request.body).encode("utf-8", "surrogatepass")
                else:
                    assert isinstance(request.body, bytes)
                    body = request.body
            query = "&".join(
                f"{_quote(name)}={_quote(_query_value(item))}"
                for name, value in request.query.items()
                for item in (value if isinstance(value, list) else [value])
            )
            url = self.base_url + path + (f"?{query}" if query else "")
            prepared = self.session.prepare_request(
                requests.Request(request.method, url, data=body)
            )
        except (UnicodeError, ValueError, TypeError, requests.RequestException):
            return  # not sendable
        for name, value in request.headers.items():
            prepared.headers[name] = value
        headers = {name: str(value) for name, value in prepared.headers.items()}
        sent = Sent(request.method, url, headers, body, request.mutation)
        self.sent += 1
        status: int | None = None
        try:
            response = self.session.send(
                prepared, timeout=REQUEST_TIMEOUT_SECONDS, allow_redirects=False
            )
            status = response.status_code
        except requests.exceptions.Timeout:
            self._record("timeout", request, sent, None, "no answer in time")
            self._check_alive(request, sent)
        except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, ValueError):
            return  # not sendable: http.client refused it (a header with a line break...)
        except requests.RequestException as exc:
            # A closed or reset connection: fair for a request the server refuses early
            # (a 70,000-character header), a defect only if the server is gone.
            self._record("connection", request, sent, None, f"{type(exc).__name__}: {exc}")
            self._check_alive(request, sent)
        if status is not None:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == 401 and "Authorization" in request.headers:
                self.world.stale = not self.world.token_works()
        self._take_log((request, sent, status))

    def _check_alive(self, request: Request, sent: Sent) -> None:
        """After a request without an answer: the server must still answer others."""
        for _ in range(3):
            try:
                response = requests.get(
                    f"{self.base_url}/_matrix/client/versions", timeout=REQUEST_TIMEOUT_SECONDS
                )
                if response.status_code == 200:
                    self.world.stale = self.world.stale or not self.world.token_works()
                    return
            except requests.RequestException:
                time.sleep(1)
        self._take_log((request, sent, None))
        self._record("server down", request, sent, None, "the server stopped answering")
        raise ServerDown

    def _take_log(self, context: tuple[Request, Sent, int | None] | None) -> None:
        text = self.log.new_text()
        handled = False
        if text:
            for record in _log_records(text):
                if _is_protocol_error(record):
                    self.protocol_errors += 1
                    continue
                if "Unhandled error" in record:
                    kind = "unhandled error"
                elif "Traceback (most recent call last)" in record:
                    kind = "background traceback"
                else:
                    continue
                if context is None:
                    self._record_log_only(kind, record)
                    continue
                request, sent, status = context
                self._record(kind, request, sent, status, record)
                handled = True
        if context is not None and not handled:
            request, sent, status = context
            if status is not None and status >= 500:
                self._record("5xx", request, sent, status, "")

    def _record(
        self, kind: str, request: Request, sent: Sent, status: int | None, log_text: str
    ) -> None:
        signature = _exception_signature(log_text) if log_text else kind
        key = (request.method, request.template, signature)
        found = self.findings.get(key)
        if found is None:
            self.findings[key] = Finding(
                kind, request.method, request.template, signature, status, sent, log_text
            )
            return
        found.count += 1
        if sent.size() < found.example.size():
            found.example, found.traceback, found.status = sent, log_text, status

    def _record_log_only(self, kind: str, record: str) -> None:
        signature = _exception_signature(record)
        key = ("-", "(between requests)", signature)
        if key in self.findings:
            self.findings[key].count += 1
        else:
            empty = Sent("-", "-", {}, None, "")
            self.findings[key] = Finding(
                kind, "-", "(between requests)", signature, None, empty, record
            )


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _unquote(value: str) -> str:
    return unquote(value, errors="surrogateescape")


def _quote(value: str) -> str:
    """Percent-encoded UTF-8; undecodable bytes (kept as surrogate escapes) go back as
    they came, lone surrogates as their (invalid) UTF-8 form."""
    try:
        return quote(value, safe="", errors="surrogateescape")
    except UnicodeEncodeError:
        return quote(value, safe="", errors="surrogatepass")
