"""One scripted scenario of rooms and the same simplified sliding sync requests (MSC4186),
run against any homeserver's client API, and what its answers are compared by.

``run_scenario(client)`` registers alice, bob and carol and builds, in this order:

- ``named``: alice's room with a name; bob joins, says hello, alice reads it (a receipt),
  then bob mentions alice (a highlight after the receipt); alice and bob each set room
  account data in it (only alice's is hers to see) and bob is typing.
- ``unnamed``: bob's room without a name (its name comes from heroes); alice and carol join.
- ``dm``: bob's direct chat with alice (``is_direct``, alice's ``m.direct``).
- ``invite``: carol's room, alice invited and not answering.
- ``encrypted``: alice's room with ``m.room.encryption``; bob sends an encrypted event.
- ``left``: bob's room alice joined and left before the first request.
- ``kicked``: bob's room alice was kicked from.
- ``tombstoned``: alice's room, upgraded into ``upgraded``.
- ``leaving``: bob's room alice leaves between the two requests.

plus a to-device message for alice and one-time keys on her device. Then alice makes the
first request (lists ``all``, ``recent``, ``dms``, ``invites``, ``encrypted``, a
subscription to ``tombstoned``, every extension), bob writes a new message (and a
receipt), carol logs in a new device, bob sends a second to-device message, alice
leaves ``leaving`` and bob sets a display name in ``unnamed`` (his member event the
newest: the heroes' order turns); and the incremental request follows with the first
one's ``pos``.
Then alice joins ``invite`` and reads the mention, renames ``named``, bob stops typing,
and a third request follows the second.

``normalise`` turns an answer into the same shape on every server: user IDs become the
role names, room IDs the scenario's names, event IDs ``type/sender/state key or body``,
device IDs the role's device; timestamps, ages, tokens and ``unsigned`` are dropped;
``bump_stamp`` values become their rank among the scenario's (their order kept); the
room IDs of a list are sorted but for ``recent`` (see ``RECENT_END``), global account
data is sorted by type, and a room without account data has no entry.
``differences`` lists every path where two normalised answers differ.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient, unique_localpart
from harness.sliding_sync import sliding

ROOM_VERSION = "12"
ROLES = ("alice", "bob", "carol")
REQUIRED_STATE = [["m.room.create", ""], ["m.room.name", ""], ["m.room.member", "$LAZY"]]
EXTENSIONS: dict[str, Any] = {
    "account_data": {"enabled": True},
    "receipts": {"enabled": True},
    "typing": {"enabled": True},
    "e2ee": {"enabled": True},
    "to_device": {"enabled": True},
}

# Keys whose values are per-server noise: times, tokens, server-added ``unsigned``.
_DROPPED_KEYS = frozenset({"origin_server_ts", "age", "ts", "prev_batch", "unsigned"})
# Lists whose order carries no meaning.
_UNORDERED_KEYS = frozenset({"changed", "left", "user_ids", "device_unused_fallback_key_types"})

_txns = itertools.count()


# Synapse sorts a list only when its range does not cover it all (a list of 9 rooms within
# [0, 9] comes in its database's order, for the client to sort by ``bump_stamp``); so the
# order is compared on ``recent``, whose range ends before the list does.
RECENT_END = 5


def _list(filters: dict[str, Any] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "ranges": [[0, 9]],
        "timeline_limit": 3,
        "required_state": REQUIRED_STATE,
    }
    if filters is not None:
        config["filters"] = filters
    return config


def request_body(subscription_room: str, to_device_since: str | None = None) -> dict[str, Any]:
    """The sliding sync request of the scenario (both times the same, but ``since``)."""
    extensions = json.loads(json.dumps(EXTENSIONS))
    if to_device_since is not None:
        extensions["to_device"]["since"] = to_device_since
    return {
        "lists": {
            "all": _list(),
            "recent": {**_list(), "ranges": [[0, RECENT_END]]},
            "dms": _list({"is_dm": True}),
            "invites": _list({"is_invite": True}),
            "encrypted": _list({"is_encrypted": True}),
        },
        "room_subscriptions": {
            subscription_room: {
                "timeline_limit": 1,
                "required_state": [["m.room.tombstone", ""], ["m.room.create", ""]],
            }
        },
        "extensions": extensions,
    }


@dataclass
class Names:
    """What each server-specific ID stands for in the scenario."""

    users: dict[str, str] = field(default_factory=dict)
    rooms: dict[str, str] = field(default_factory=dict)
    devices: dict[str, str] = field(default_factory=dict)
    events: dict[str, str] = field(default_factory=dict)

    def describe_event(self, event: dict[str, Any]) -> str:
        sender = self.users.get(str(event.get("sender")), str(event.get("sender")))
        content = event.get("content")
        detail = ""
        if isinstance(content, dict) and isinstance(content.get("body"), str):
            detail = self.text(content["body"])
        elif "state_key" in event:
            detail = self.text(str(event["state_key"]))
        return f"{event.get('type')}/{sender}/{detail}"

    def text(self, value: str) -> str:
        """``value`` with every known ID in it replaced."""
        for table in (self.users, self.rooms, self.events, self.devices):
            if value in table:
                return table[value]
        for user_id, role in self.users.items():
            value = value.replace(user_id, role)
        return value


@dataclass
class Outcome:
    """The two answers alice got, and what their IDs stand for."""

    first: dict[str, Any]
    second: dict[str, Any]
    third: dict[str, Any]
    names: Names
    # Each joined room's ``unread_notifications`` on /sync (v2) right after each request
    # (by room name): Synapse 1.163's sliding sync sends 0 for both counts, always.
    first_counts: dict[str, Any] = field(default_factory=dict)
    second_counts: dict[str, Any] = field(default_factory=dict)
    third_counts: dict[str, Any] = field(default_factory=dict)

    def normalised(self, which: str) -> Any:
        """The answer ``which`` (first, second, third) normalised, its bump stamps ranked
        among those of all three answers (Synapse leaves out an unchanged one)."""
        stamps = bump_stamps(self.first, self.second, self.third)
        return normalise(getattr(self, which), self.names, stamps)


@dataclass
class Actor:
    client: MatrixClient
    account: Account

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.client.request(method, path, json=body, token=self.account)
        assert response.status == 200, f"{method} {path}: {response.status} {response.body}"
        return response.body

    async def create_room(self, **body: Any) -> str:
        room_id: str = (
            await self.call("POST", "createRoom", {"room_version": ROOM_VERSION, **body})
        )["room_id"]
        return room_id

    async def join(self, room_id: str) -> None:
        await self.call("POST", f"join/{quote(room_id)}", {})

    async def send(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        path = f"rooms/{quote(room_id)}/send/{event_type}/diff{next(_txns)}"
        event_id: str = (await self.call("PUT", path, content))["event_id"]
        return event_id

    async def say(self, room_id: str, body: str, **extra: Any) -> str:
        return await self.send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": body, **extra}
        )


async def run_scenario(client: MatrixClient) -> Outcome:
    """Build the scenario on ``client``'s server and make alice's two requests."""
    names = Names()
    actors: dict[str, Actor] = {}
    for role in ROLES:
        account = await client.register(unique_localpart(role))
        actors[role] = Actor(client, account)
        names.users[account.user_id] = role
        names.devices[account.device_id] = f"{role}-device"
        await actors[role].call(
            "PUT", f"profile/{quote(account.user_id)}/displayname", {"displayname": role.title()}
        )
    alice, bob, carol = actors["alice"], actors["bob"], actors["carol"]
    a_id, b_id, c_id = (actors[role].account.user_id for role in ROLES)

    def room(name: str, room_id: str) -> str:
        names.rooms[room_id] = name
        return room_id

    def event(description: str, event_id: str) -> str:
        names.events[event_id] = description
        return event_id

    named = room("named", await alice.create_room(name="Named room", invite=[b_id]))
    await bob.join(named)
    hello = event("m.room.message/bob/hello", await bob.say(named, "hello"))
    await alice.call("POST", f"rooms/{quote(named)}/receipt/m.read/{quote(hello)}", {})
    body = f"{a_id}: look at this"
    mention = event(
        f"m.room.message/bob/{names.text(body)}",
        await bob.say(named, body, **{"m.mentions": {"user_ids": [a_id]}}),
    )

    unnamed = room("unnamed", await bob.create_room(invite=[a_id, c_id]))
    await alice.join(unnamed)
    await carol.join(unnamed)
    event("m.room.message/carol/hi all", await carol.say(unnamed, "hi all"))

    dm = room(
        "dm", await bob.create_room(preset="trusted_private_chat", is_direct=True, invite=[a_id])
    )
    await alice.join(dm)
    await alice.call("PUT", f"user/{quote(a_id)}/account_data/m.direct", {b_id: [dm]})
    event("m.room.message/bob/psst", await bob.say(dm, "psst"))

    invite = room("invite", await carol.create_room(name="Carol's room", invite=[a_id]))

    encryption = {
        "type": "m.room.encryption",
        "state_key": "",
        "content": {"algorithm": "m.megolm.v1.aes-sha2"},
    }
    encrypted = room(
        "encrypted",
        await alice.create_room(name="Secret", invite=[b_id], initial_state=[encryption]),
    )
    await bob.join(encrypted)
    ciphertext = {
        "algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": "AwgAEnACgAkLmt6qF84IK++J7UDH2Za1YVchHyprqTqsg",
        "sender_key": "IlRMeOPX2e0MurIyfWEucYBRVOEEUMrOHqn/8mLqMjA",
        "session_id": "X3lUlvLELLYxeTx4yOVu6UDpasGEVO0Jbu+QFnm0cKQ",
        "device_id": "BOBDEVICE",
    }
    event("m.room.encrypted/bob/", await bob.send(encrypted, "m.room.encrypted", ciphertext))

    left = room("left", await bob.create_room(name="Left room", invite=[a_id]))
    await alice.join(left)
    await alice.call("POST", f"rooms/{quote(left)}/leave", {})

    kicked = room("kicked", await bob.create_room(name="Kicked room", invite=[a_id]))
    await alice.join(kicked)
    await bob.call("POST", f"rooms/{quote(kicked)}/kick", {"user_id": a_id, "reason": "bye"})

    tombstoned = room("tombstoned", await alice.create_room(name="Old room", invite=[b_id]))
    await bob.join(tombstoned)
    event("m.room.message/bob/before the upgrade", await bob.say(tombstoned, "before the upgrade"))
    upgraded = (
        await alice.call(
            "POST", f"rooms/{quote(tombstoned)}/upgrade", {"new_version": ROOM_VERSION}
        )
    )["replacement_room"]
    room("upgraded", upgraded)

    leaving = room("leaving", await bob.create_room(name="Leaving room", invite=[a_id]))
    await alice.join(leaving)
    event("m.room.message/bob/stay?", await bob.say(leaving, "stay?"))

    await bob.call(
        "PUT", f"user/{quote(b_id)}/rooms/{quote(named)}/account_data/org.example.note", {"n": 1}
    )
    await alice.call(
        "PUT", f"user/{quote(a_id)}/rooms/{quote(named)}/account_data/org.example.note", {"n": 2}
    )
    await bob.call(
        "PUT", f"rooms/{quote(named)}/typing/{quote(b_id)}", {"typing": True, "timeout": 60000}
    )
    await alice.call(
        "POST",
        "keys/upload",
        {"one_time_keys": {"curve25519:AAAAAQ": "x4iQrLNFKEBo0Q8H4IkSm6chQa0WNFaPtJBHP+6lBA0"}},
    )
    await _to_device(bob, alice, "first")

    first = await sliding(client, alice.account, request_body(tombstoned))
    first_counts = await _unread_counts(alice, names)

    news = event("m.room.message/bob/news", await bob.say(dm, "news"))
    await bob.call("POST", f"rooms/{quote(dm)}/receipt/m.read/{quote(news)}", {})
    await client.login(carol.account.user_id)
    await _to_device(bob, alice, "second")
    await alice.call("POST", f"rooms/{quote(leaving)}/leave", {})
    # Bob's member event in ``unnamed`` is now its newest: the heroes (in stream order)
    # become carol then bob, with his new display name.
    await bob.call(
        "PUT",
        f"rooms/{quote(unnamed)}/state/m.room.member/{quote(b_id)}",
        {"membership": "join", "displayname": "Bob B"},
    )
    since = first.get("extensions", {}).get("to_device", {}).get("next_batch")
    second = await sliding(client, alice.account, request_body(tombstoned, since), first["pos"])
    second_counts = await _unread_counts(alice, names)

    await alice.join(invite)
    await alice.call("PUT", f"rooms/{quote(named)}/state/m.room.name/", {"name": "Renamed"})
    await bob.call("PUT", f"rooms/{quote(named)}/typing/{quote(b_id)}", {"typing": False})
    await alice.call("POST", f"rooms/{quote(named)}/receipt/m.read/{quote(mention)}", {})
    since = second.get("extensions", {}).get("to_device", {}).get("next_batch")
    third = await sliding(client, alice.account, request_body(tombstoned, since), second["pos"])
    third_counts = await _unread_counts(alice, names)
    for answer in (first, second, third):
        _collect_events(names, answer)
    return Outcome(first, second, third, names, first_counts, second_counts, third_counts)


async def _unread_counts(actor: Actor, names: Names) -> dict[str, Any]:
    """The ``unread_notifications`` of each joined room on an initial /sync (v2)."""
    no_state = json.dumps({"room": {"timeline": {"limit": 1}, "state": {"types": []}}})
    response = await actor.client.request(
        "GET", "sync", token=actor.account, params={"filter": no_state, "timeout": "0"}
    )
    joined = response.ok().get("rooms", {}).get("join", {})
    return {
        names.rooms.get(room_id, room_id): room.get("unread_notifications", {})
        for room_id, room in joined.items()
    }


async def _to_device(sender: Actor, recipient: Actor, text: str) -> None:
    messages = {recipient.account.user_id: {recipient.account.device_id: {"text": text}}}
    path = f"sendToDevice/org.example.ping/diff{next(_txns)}"
    await sender.call("PUT", path, {"messages": messages})


def _collect_events(names: Names, value: Any) -> None:
    """Name every event an answer carries (the scenario named those it sent)."""
    if isinstance(value, dict):
        event_id = value.get("event_id")
        if isinstance(event_id, str) and "type" in value and event_id not in names.events:
            names.events[event_id] = names.describe_event(value)
        for item in value.values():
            _collect_events(names, item)
    elif isinstance(value, list):
        for item in value:
            _collect_events(names, item)


def bump_stamps(*answers: dict[str, Any]) -> list[int]:
    """Every ``bump_stamp`` of the answers, in order."""
    return sorted(
        {
            room["bump_stamp"]
            for answer in answers
            for room in answer.get("rooms", {}).values()
            if "bump_stamp" in room
        }
    )


def normalise(answer: dict[str, Any], names: Names, stamps: list[int] | None = None) -> Any:
    """The server-independent form of one answer (see the module docstring); a
    ``bump_stamp`` becomes its rank among ``stamps`` (by default, the answer's own)."""
    rank = {stamp: index for index, stamp in enumerate(stamps or bump_stamps(answer))}

    def walk(value: Any, key: str | None) -> Any:
        if key == "lists" and isinstance(value, dict):
            return {name: _list_answer(name, walk(config, None)) for name, config in value.items()}
        if key == "account_data" and isinstance(value, dict):
            return _account_data(walk(value, None))
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if k in _DROPPED_KEYS or k == "pos":
                    continue
                if k == "next_batch":
                    out[k] = "<token>"
                elif k == "bump_stamp" and v in rank:
                    out[k] = f"rank {rank[v]}"
                elif k == "event_id":
                    out[k] = names.events.get(v, f"?{v}")
                else:
                    out[names.text(k)] = walk(v, k)
            return out
        if isinstance(value, list):
            items = [walk(item, None) for item in value]
            if key in _UNORDERED_KEYS or key in ("required_state", "invite_state"):
                items.sort(key=lambda item: json.dumps(item, sort_keys=True))
            return items
        if isinstance(value, str):
            return names.text(value)
        return value

    return walk(answer, None)


def _list_answer(name: str, answer: Any) -> Any:
    """The room IDs of a list whose range covers it all come in no particular order on
    Synapse: they are compared as a set (sorted)."""
    if name != "recent" and isinstance(answer, dict):
        for op in answer.get("ops", []):
            if isinstance(op.get("room_ids"), list):
                op["room_ids"] = sorted(op["room_ids"])
    return answer


def _account_data(answer: dict[str, Any]) -> dict[str, Any]:
    """Global account data by type; a room with no account data has no entry (Synapse
    sends an empty list for each room of the answer, Peyvand nothing: the same)."""
    out = dict(answer)
    if isinstance(out.get("global"), list):
        out["global"] = sorted(out["global"], key=lambda event: str(event.get("type")))
    if isinstance(out.get("rooms"), dict):
        out["rooms"] = {room: events for room, events in out["rooms"].items() if events}
    return out


def differences(peyvand: Any, synapse: Any, path: str = "") -> list[str]:
    """Every path where the two normalised answers differ, with both values."""
    if isinstance(peyvand, dict) and isinstance(synapse, dict):
        found: list[str] = []
        for key in sorted(set(peyvand) | set(synapse)):
            where = f"{path}.{key}" if path else key
            if key not in synapse:
                found.append(f"{where}: only on Peyvand: {_short(peyvand[key])}")
            elif key not in peyvand:
                found.append(f"{where}: only on Synapse: {_short(synapse[key])}")
            else:
                found.extend(differences(peyvand[key], synapse[key], where))
        return found
    if isinstance(peyvand, list) and isinstance(synapse, list):
        if len(peyvand) == len(synapse):
            found = []
            for index, (mine, theirs) in enumerate(zip(peyvand, synapse, strict=True)):
                found.extend(differences(mine, theirs, f"{path}[{index}]"))
            return found
        mine_only = [item for item in peyvand if item not in synapse]
        theirs_only = [item for item in synapse if item not in peyvand]
        found = [f"{path}: {len(peyvand)} items on Peyvand, {len(synapse)} on Synapse"]
        found.extend(f"{path}: only on Peyvand: {_short(item)}" for item in mine_only)
        found.extend(f"{path}: only on Synapse: {_short(item)}" for item in theirs_only)
        return found
    if peyvand != synapse:
        return [f"{path}: Peyvand {_short(peyvand)} != Synapse {_short(synapse)}"]
    return []


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 400 else text[:400] + "..."
