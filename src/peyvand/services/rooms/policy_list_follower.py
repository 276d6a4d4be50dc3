"""Following the moderation policy rooms (Client-Server API, "Moderation policy lists":
subscribing is "left as an implementation detail"): the server's own user
(``policy_user``, created without a password if missing) joins each room of
``[moderation] policy_rooms``, locally or over federation, and its rules are read into
``PolicyListService``.

Joining runs in a background task, retried with backoff (1 s doubling to 5 min) while it
fails, so start-up never waits on other servers. After every commit that touches a
followed room its rules are read again, and a policy user removed from a room joins it
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol

from peyvand.background import BackgroundTask
from peyvand.errors import MatrixError
from peyvand.services.rooms.policy_lists import FollowedRoom, PolicyListService
from peyvand.storage.accounts import AccountStore
from peyvand.storage.errors import ConflictError
from peyvand.storage.models import EventToPersist
from peyvand.types import JsonDict, RoomAlias, RoomID, ServerName, UserID, server_name_of

logger = logging.getLogger(__name__)

AliasLookup = Callable[[RoomAlias], Awaitable[JsonDict]]

FIRST_RETRY_SECONDS: Final = 1.0
MAX_RETRY_SECONDS: Final = 300.0


class Join(Protocol):
    """``MembershipService.join``: join ``room_id`` through ``servers`` if it is not here."""

    async def __call__(
        self, room_id: RoomID, user_id: UserID, *, servers: Sequence[ServerName]
    ) -> None: ...


class PolicyListFollower:
    def __init__(
        self,
        lists: PolicyListService,
        accounts: AccountStore,
        join: Join,
        lookup_alias: AliasLookup,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lists = lists
        self._accounts = accounts
        self._join = join
        self._lookup_alias = lookup_alias
        self._clock = clock
        self._monotonic = monotonic
        self._dirty: set[RoomID] = set()
        self._wake = asyncio.Event()
        # Nothing to follow, no task.
        self._task = BackgroundTask("policy-lists", self._run) if lists.followed else None

    async def start(self) -> None:
        """Follow the configured rooms in the background: start-up does not wait."""
        if self._task is not None:
            self._task.start()

    async def stop(self) -> None:
        if self._task is not None:
            await self._task.stop()

    async def _run(self) -> None:
        def next_retry() -> float | None:
            pending = [r.retry_at for r in self._lists.followed if r.status != "joined"]
            return min(pending) if pending else None

        await _passes(self._step, next_retry, self._wake, self._monotonic, "following")

    async def _step(self) -> None:
        now = self._monotonic()
        for room in self._lists.followed:
            if room.status != "joined" and room.retry_at <= now:
                await self._follow(room)
        while self._dirty:
            room_id = self._dirty.pop()
            if (changed := self._lists.followed_room(room_id)) is not None:
                await self._lists.read_rules(changed)

    async def _follow(self, room: FollowedRoom) -> None:
        """Join ``room`` as the policy user (a no-op when already joined) and read its
        rules; on failure, retry later with a doubled delay."""
        try:
            await self._ensure_policy_user()
            servers: list[ServerName] = []
            if room.configured.startswith("#"):
                found = await self._lookup_alias(RoomAlias(room.configured))
                room_id = RoomID(str(found["room_id"]))
                servers = [ServerName(s) for s in found.get("servers", []) if isinstance(s, str)]
            else:
                room_id = RoomID(room.configured)
            if server := server_name_of(room_id):  # room versions before 12 name a server
                servers.append(server)
            self._lists.note_room_id(room, room_id)
            await self._join(room_id, self._lists.policy_user, servers=servers)
        except Exception as exc:
            room.failures += 1
            delay = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** (room.failures - 1))
            room.status, room.error = "failed", _describe(exc)
            room.retry_at = self._monotonic() + delay
            logger.warning(
                "cannot follow policy room %s (retrying in %.0f s): %s",
                room.configured,
                delay,
                room.error,
            )
            return
        if room.status != "joined":
            logger.info("following policy room %s (%s)", room.configured, room_id)
        room.status, room.error, room.failures = "joined", None, 0
        await self._lists.read_rules(room)

    async def _ensure_policy_user(self) -> None:
        policy_user = self._lists.policy_user
        if await self._accounts.get_user(policy_user) is not None:
            return
        with contextlib.suppress(ConflictError):  # created meanwhile
            await self._accounts.create_user(
                policy_user, None, is_admin=False, created_ts=int(self._clock() * 1000)
            )
            logger.info("created the policy user %s", policy_user)

    def on_persisted(self, batch: Sequence[EventToPersist]) -> None:
        """Event dispatcher listener: re-read the rules of followed rooms that changed (a
        rule set, replaced or redacted) and rejoin a room the policy user was removed from."""
        for persisted in batch:
            pdu = persisted.pdu
            room = self._lists.followed_room(pdu.room_id)
            if room is None:
                continue
            self._dirty.add(RoomID(pdu.room_id))
            if (
                pdu.type == "m.room.member"
                and pdu.state_key == self._lists.policy_user
                and pdu.membership != "join"
                and room.status == "joined"
            ):
                room.status, room.error, room.retry_at = "pending", "removed from the room", 0.0
            self._wake.set()


async def _passes(
    step: Callable[[], Awaitable[None]],
    next_retry: Callable[[], float | None],
    wake: asyncio.Event,
    monotonic: Callable[[], float],
    doing: str,
) -> None:
    """Run ``step`` whenever ``wake`` is set or the earliest retry (``next_retry``, in
    ``monotonic`` time) is due, for ever; a failing pass is logged and the next one runs
    a second later."""
    while True:
        try:
            await step()
        except Exception:  # never let one bad pass end the loop
            logger.exception("%s the moderation policy lists failed", doing)
            await asyncio.sleep(FIRST_RETRY_SECONDS)
            continue
        due = next_retry()
        timeout = None if due is None else max(0.0, due - monotonic())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout)
        wake.clear()


class PolicyRulesReader:
    """The rules of the followed rooms in a process that does not follow them (issue 21:
    the follower runs on the primary event writer, and every process enforces the
    rules: the federation process taking in transactions, the writers authorising
    events). Reads each room's rules into this process's ``PolicyListService`` at start
    and after every event of a followed room (told by the event follower); an alias is
    resolved again with backoff while it fails. Never joins anything."""

    def __init__(
        self,
        lists: PolicyListService,
        lookup_alias: AliasLookup,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lists = lists
        self._lookup_alias = lookup_alias
        self._monotonic = monotonic
        # Per configured room: failures in a row and when to resolve it again.
        self._retry: dict[str, tuple[int, float]] = {}
        self._dirty: set[RoomID] = set()
        self._wake = asyncio.Event()
        self._task = BackgroundTask("policy-rules", self._run) if lists.followed else None

    async def start(self) -> None:
        if self._task is not None:
            self._task.start()

    async def stop(self) -> None:
        if self._task is not None:
            await self._task.stop()

    async def _run(self) -> None:
        def next_retry() -> float | None:
            return min((at for _, at in self._retry.values()), default=None)

        await _passes(self._step, next_retry, self._wake, self._monotonic, "reading")

    async def _step(self) -> None:
        now = self._monotonic()
        for room in self._lists.followed:
            if room.room_id is not None:
                # Resolved (here, or by the follower in this process).
                self._retry.pop(room.configured, None)
                continue
            failures, retry_at = self._retry.get(room.configured, (0, 0.0))
            if retry_at > now:
                continue
            try:
                if room.configured.startswith("#"):
                    found = await self._lookup_alias(RoomAlias(room.configured))
                    room_id = RoomID(str(found["room_id"]))
                else:
                    room_id = RoomID(room.configured)
            except Exception as exc:
                delay = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2**failures)
                self._retry[room.configured] = (failures + 1, now + delay)
                logger.info("policy room %s not resolved yet: %s", room.configured, exc)
                continue
            self._retry.pop(room.configured, None)
            self._lists.note_room_id(room, room_id)
            self._dirty.add(room_id)
        while self._dirty:
            room_id = self._dirty.pop()
            if (changed := self._lists.followed_room(room_id)) is not None:
                await self._lists.read_rules(changed)

    def on_persisted(self, batch: Sequence[EventToPersist]) -> None:
        """Event dispatcher listener: read the rules of followed rooms that changed."""
        for persisted in batch:
            if self._lists.followed_room(persisted.pdu.room_id) is not None:
                self._dirty.add(RoomID(persisted.pdu.room_id))
                self._wake.set()


def _describe(exc: Exception) -> str:
    if isinstance(exc, MatrixError):
        return f"{exc.errcode.value}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"
