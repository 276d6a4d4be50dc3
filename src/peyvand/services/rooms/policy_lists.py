"""Moderation policy lists (Client-Server API, "Moderation policy lists"): the server
follows the rooms of ``[moderation] policy_rooms`` and enforces their ``m.ban`` rules.

Subscribing is "left as an implementation detail" by the spec; here the server's own user
(``policy_user``) joins each room (``policy_list_follower.py``) and the rules are read from
the room's current state into the matcher (``events/policy_rules.py``). This module holds
the rooms followed, their rules, and what they refuse.

Enforcement follows the spec's suggested interpretation of ``m.ban``, for the server:

- a banned user (``user`` rule, or ``server`` rule on their server) may not join or knock
  on rooms here, invite, or be invited; events they send are soft-failed on receipt (kept
  out of the timeline and the room's current state, however they arrive);
- a banned server's invites, joins and room reads are refused, and its transactions'
  PDUs and EDUs dropped;
- nobody may join, knock on or be invited to a banned room (``room`` rule on its ID or
  one of its published aliases).

Refusals are 403 ``M_FORBIDDEN``. Rules never apply to this server's name (a list cannot
cut the server off from itself), to the policy user, or to the policy rooms themselves
(a list cannot lock the server out of following it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from peyvand.config.model import ModerationConfig
from peyvand.errors import Errcode, MatrixError
from peyvand.events.pdu import Pdu
from peyvand.events.policy_rules import RULE_TYPES, PolicyMatcher, PolicyRule, parse_rule
from peyvand.services.timeline.room_state import StateService
from peyvand.types import JsonDict, RoomID, ServerName, UserID, server_name_of

logger = logging.getLogger(__name__)

Status = Literal["pending", "joined", "failed"]

_ALIAS_KEY: Final = ("m.room.canonical_alias", "")


@dataclass
class FollowedRoom:
    """One configured policy room and how following it goes."""

    configured: str  # the room ID or alias from the config
    room_id: RoomID | None = None
    status: Status = "pending"
    error: str | None = None
    failures: int = 0
    retry_at: float = 0.0  # monotonic clock
    rules: tuple[PolicyRule, ...] = ()

    def to_json(self) -> JsonDict:
        out: JsonDict = {
            "room": self.configured,
            "room_id": self.room_id,
            "status": self.status,
            "rules": len(self.rules),
        }
        if self.error is not None:
            out["error"] = self.error
        return out


def rule_json(rule: PolicyRule) -> JsonDict:
    return {
        "kind": rule.kind,
        "entity": rule.entity,
        "recommendation": "m.ban",
        "reason": rule.reason,
        "room_id": rule.room_id,
        "type": rule.event_type,
        "state_key": rule.state_key,
    }


class PolicyListService:
    """The followed policy rooms, their rules in force, and the checks that enforce them.
    ``PolicyListFollower`` joins the rooms and calls ``read_rules`` when they change."""

    def __init__(
        self, server_name: ServerName, config: ModerationConfig, state: StateService
    ) -> None:
        self._server_name = server_name
        self._state = state
        self.policy_user = UserID(f"@{config.policy_user}:{server_name}")
        self.followed = [FollowedRoom(room) for room in dict.fromkeys(config.policy_rooms)]
        self.matcher = PolicyMatcher()
        self._by_room_id: dict[RoomID, FollowedRoom] = {}

    # -- the rooms followed ------------------------------------------------------------

    def followed_room(self, room_id: str) -> FollowedRoom | None:
        return self._by_room_id.get(RoomID(room_id))

    def note_room_id(self, room: FollowedRoom, room_id: RoomID) -> None:
        """``room`` (configured by ID or alias) is ``room_id``; an alias that moved to
        another room drops the old room's rules."""
        if room.room_id is not None and room.room_id != room_id:  # the alias moved
            self._by_room_id.pop(room.room_id, None)
            room.rules = ()
        room.room_id = room_id
        self._by_room_id[room_id] = room

    async def read_rules(self, room: FollowedRoom) -> None:
        """The room's ``m.ban`` rules from its current state; the matcher rebuilt."""
        snapshot = None if room.room_id is None else await self._state.get_room(room.room_id)
        if snapshot is None:
            return
        wanted = {k: e for k, e in snapshot.state.items() if k[0] in RULE_TYPES}
        stored = await self._state.get_events(wanted.values())
        pdus = await self._state.get_pdus(wanted.values())
        rules = []
        for (event_type, state_key), event_id in wanted.items():
            pdu = pdus.get(event_id)
            known = stored.get(event_id)
            if pdu is None or (known is not None and known.redacted_by is not None):
                continue
            rule = parse_rule(snapshot.room_id, event_type, state_key, pdu.content)
            if rule is not None:
                rules.append(rule)
        room.rules = tuple(sorted(rules, key=lambda r: (r.kind, r.entity, r.state_key)))
        self.matcher = PolicyMatcher(tuple(r for f in self.followed for r in f.rules))

    # -- enforcement -------------------------------------------------------------------

    def is_policy_room(self, room_id: str) -> bool:
        return room_id in self._by_room_id

    def server_rule(self, server_name: ServerName) -> PolicyRule | None:
        """The ban on ``server_name`` (never on this server)."""
        if server_name == self._server_name:
            return None
        return self.matcher.server(server_name)

    def user_rule(self, user_id: str) -> PolicyRule | None:
        """The ban on ``user_id``: a user rule, or a server rule on their server."""
        if user_id == self.policy_user:
            return None
        return self.matcher.user(user_id) or self.server_rule(server_name_of(user_id))

    async def room_rule(self, room_id: RoomID) -> PolicyRule | None:
        """The ban on a room: a room rule matching its ID, or its canonical alias or alt
        aliases when the room is known here (the spec lets rules name aliases)."""
        if not self.matcher.rules or self.is_policy_room(room_id):
            return None
        identifiers: list[str] = [room_id]
        snapshot = await self._state.get_room(room_id)
        if snapshot is not None and _ALIAS_KEY in snapshot.state:
            events = await self._state.get_state_events(snapshot.state, [_ALIAS_KEY])
            if (event := events.get(_ALIAS_KEY)) is not None:
                identifiers.extend(_aliases(event.content))
        return self.matcher.room(identifiers)

    def check_server(self, server_name: ServerName, room_id: str | None = None) -> None:
        """403 if ``server_name`` is banned (requests about a policy room excepted)."""
        if room_id is not None and self.is_policy_room(room_id):
            return
        if self.server_rule(server_name) is not None:
            logger.info("refused %s: banned by a moderation policy list", server_name)
            raise MatrixError(Errcode.FORBIDDEN, "Server is banned by a moderation policy list")

    async def check_join(self, room_id: RoomID, user_id: UserID) -> None:
        """403 if ``user_id`` may not join or knock on ``room_id``."""
        if user_id == self.policy_user and self.is_policy_room(room_id):
            return
        self.check_user(user_id)
        await self._refuse_room(room_id)

    async def check_invite(self, room_id: RoomID, sender: UserID, target: UserID) -> None:
        """403 if ``sender`` may not invite ``target`` to ``room_id``."""
        self.check_user(sender)
        self.check_user(target)
        await self._refuse_room(room_id)

    def check_user(self, user_id: UserID) -> None:
        """403 if ``user_id`` is banned."""
        if self.user_rule(user_id) is not None:
            logger.info("refused %s: banned by a moderation policy list", user_id)
            raise MatrixError(Errcode.FORBIDDEN, f"{user_id} is banned by a moderation policy list")

    async def _refuse_room(self, room_id: RoomID) -> None:
        if await self.room_rule(room_id) is not None:
            logger.info("refused a membership in %s: banned by a moderation policy list", room_id)
            raise MatrixError(Errcode.FORBIDDEN, "The room is banned by a moderation policy list")

    def admits_pdu(self, origin: ServerName, raw: Any) -> bool:
        """Whether a PDU of a transaction from ``origin`` is taken in: not when the
        server is banned, unless the PDU belongs to a policy room."""
        room_id = raw.get("room_id") if isinstance(raw, dict) else None
        if isinstance(room_id, str) and self.is_policy_room(room_id):
            return True
        return self.server_rule(origin) is None

    def soft_fail_reason(self, pdu: Pdu) -> str | None:
        """Why a received event must be soft-failed: its sender is banned (not in the
        policy rooms). Soft-failing rather than dropping keeps the room's DAG whole, so
        the event is not fetched again each time a later event refers to it."""
        if self.is_policy_room(pdu.room_id) or self.user_rule(pdu.sender) is None:
            return None
        return "the sender is banned by a moderation policy list"

    # -- admin -------------------------------------------------------------------------

    def describe(self) -> JsonDict:
        """GET /_peyvand/admin/v1/policy_lists: the rooms followed and the rules in force."""
        rules = self.matcher.rules
        return {
            "policy_user": self.policy_user,
            "rooms": [r.to_json() for r in self.followed],
            "counts": {k: sum(1 for r in rules if r.kind == k) for k in ("user", "server", "room")},
            "rules": [rule_json(r) for r in rules],
        }


def _aliases(content: Mapping[str, Any]) -> list[str]:
    alias = content.get("alias")
    alt = content.get("alt_aliases")
    found = [alias] if isinstance(alias, str) else []
    if isinstance(alt, list):
        found.extend(a for a in alt if isinstance(a, str))
    return found
