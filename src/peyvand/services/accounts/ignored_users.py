"""Whom each user ignores (Client-Server API, "Ignoring Users"): the keys of
``ignored_users`` in their global ``m.ignored_user_list`` account data.

Read on every sync and page of history, so answers are cached per user and dropped when
that account data is written.
"""

from __future__ import annotations

from collections.abc import Collection

from peyvand.lru import LRU
from peyvand.storage.account_data import GLOBAL, AccountDataStore
from peyvand.types import JsonDict, RoomID, UserID

IGNORED_USER_LIST = "m.ignored_user_list"
_CACHED_USERS = 10_000


def ignored_in(content: JsonDict | None) -> frozenset[UserID]:
    """The ignored user IDs of an ``m.ignored_user_list`` content; malformed is none."""
    ignored = (content or {}).get("ignored_users")
    if not isinstance(ignored, dict):
        return frozenset()
    return frozenset(UserID(u) for u in ignored if isinstance(u, str))


class IgnoredUsers:
    def __init__(self, store: AccountDataStore) -> None:
        self._store = store
        self._cache: LRU[UserID, frozenset[UserID]] = LRU(_CACHED_USERS)
        # Bumped by every change: a read that raced one is not cached.
        self._generation = 0

    async def of(self, user_id: UserID) -> frozenset[UserID]:
        cached = self._cache.get(user_id)
        if cached is not None:
            return cached
        generation = self._generation
        ignored = ignored_in(await self._store.get(user_id, GLOBAL, IGNORED_USER_LIST))
        if generation == self._generation:
            self._cache.put(user_id, ignored)
        return ignored

    def written_elsewhere(self, user_ids: Collection[str] | None) -> None:
        """Another process of a deployment wrote account data of these users (None: of
        anyone): what is kept of them here is dropped (issue 21)."""
        self._generation += 1
        if user_ids is None:
            self._cache.clear()
            return
        for user_id in user_ids:
            self._cache.pop(UserID(user_id))

    def account_data_written(self, user_id: UserID, room_id: RoomID | str, data_type: str) -> None:
        """Called after every account data write."""
        if room_id == GLOBAL and data_type == IGNORED_USER_LIST:
            self._generation += 1
            self._cache.pop(user_id)
