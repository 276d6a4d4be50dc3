"""Custom profile fields (schema 042): every field of a local user's profile other than
``displayname`` and ``avatar_url``, whose value is any JSON, kept as canonical JSON."""

from __future__ import annotations

import json
from typing import Any

from peyvand.events.canonical_json import encode_canonical_json
from peyvand.storage.database import Database
from peyvand.types import UserID


class ProfileFieldStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_fields(self, user_id: UserID) -> dict[str, Any]:
        """Every custom field of ``user_id`` (``{}`` if none)."""
        rows = await self._db.fetch(
            "SELECT field_name, value_json FROM profile_fields WHERE user_id = $1", user_id
        )
        return {r["field_name"]: json.loads(r["value_json"]) for r in rows}

    async def get_field(self, user_id: UserID, field_name: str) -> tuple[bool, Any]:
        """Whether ``user_id`` has the field, and its value (which may be null)."""
        value = await self._db.fetchval(
            "SELECT value_json FROM profile_fields WHERE user_id = $1 AND field_name = $2",
            user_id,
            field_name,
        )
        return (False, None) if value is None else (True, json.loads(value))

    async def set_field(self, user_id: UserID, field_name: str, value: Any) -> None:
        await self._db.execute(
            "INSERT INTO profile_fields (user_id, field_name, value_json) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id, field_name) DO UPDATE SET value_json = excluded.value_json",
            user_id,
            field_name,
            encode_canonical_json(value).decode(),
        )

    async def delete_field(self, user_id: UserID, field_name: str) -> None:
        await self._db.execute(
            "DELETE FROM profile_fields WHERE user_id = $1 AND field_name = $2",
            user_id,
            field_name,
        )

    async def delete_all(self, user_id: UserID) -> None:
        """Every custom field of ``user_id`` (an erased account's)."""
        await self._db.execute("DELETE FROM profile_fields WHERE user_id = $1", user_id)
