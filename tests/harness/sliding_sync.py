"""Simplified sliding sync requests (MSC4186) for the tests of this directory."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient, Response

SLIDING_SYNC = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"


def one_list(
    end: int = 19,
    *,
    timeline_limit: int = 5,
    required_state: list[list[str]] | None = None,
    filters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A list ``[0, end]`` (named ``all``)."""
    config: dict[str, Any] = {
        "ranges": [[0, end]],
        "timeline_limit": timeline_limit,
        "required_state": required_state or [],
    }
    if filters is not None:
        config["filters"] = filters
    return {"all": config}


async def request(
    client: MatrixClient,
    account: Account,
    body: dict[str, Any],
    pos: str | None = None,
    timeout_ms: int = 0,
) -> Response:
    params = {"timeout": str(timeout_ms)}
    if pos is not None:
        params["pos"] = pos
    return await client.request("POST", SLIDING_SYNC, json=body, token=account, params=params)


async def sliding(
    client: MatrixClient,
    account: Account,
    body: dict[str, Any],
    pos: str | None = None,
    timeout_ms: int = 0,
) -> dict[str, Any]:
    """One successful response."""
    response: dict[str, Any] = (await request(client, account, body, pos, timeout_ms)).ok()
    return response


def window(response: dict[str, Any], name: str = "all") -> list[str]:
    """The room IDs of the list's first range."""
    ids: list[str] = response["lists"][name]["ops"][0]["room_ids"]
    return ids


async def create_room(client: MatrixClient, owner: Account, **body: Any) -> str:
    room_id: str = (await client.request("POST", "createRoom", json=body, token=owner)).ok()[
        "room_id"
    ]
    return room_id


async def join(client: MatrixClient, account: Account, room_id: str) -> None:
    (await client.request("POST", f"join/{quote(room_id)}", json={}, token=account)).ok()
