"""The set-up of ``bench.federated_join`` (not timed): a public room on the origin Synapse
with a given number of members, each registered through Synapse's shared-secret admin API
(``POST /_synapse/admin/v1/register``) and joined through the Client-Server API
(``POST /join/{roomId}``), at most ``concurrency`` requests at once."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench.client import PASSWORD, REQUEST_TIMEOUT_SECONDS, Account, MatrixClient
from bench.federating import shared_secret_registration
from bench.workloads import bounded_map

ADMIN_REGISTER = "/_synapse/admin/v1/register"


class SetupError(RuntimeError):
    """The origin refused a set-up request."""


@dataclass(slots=True)
class OriginRoom:
    """The room as set up: who created it, how many joined, how long it took."""

    room_id: str = ""
    creator: Account | None = None
    requested_members: int = 0
    registered: int = 0
    members: int = 0
    register_seconds: float = math.nan
    join_seconds: float = math.nan
    truncated: bool = False


async def admin_register(
    session: aiohttp.ClientSession, base_url: str, secret: str, localpart: str
) -> Account:
    """A new (non-admin) user on a Synapse at ``base_url``, logged in."""
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    url = f"{base_url}{ADMIN_REGISTER}"
    async with session.get(url, timeout=timeout) as response:
        nonce: str = (await _body(response))["nonce"]
    body = shared_secret_registration(secret, nonce, localpart, PASSWORD, admin=False)
    async with session.post(url, json=body, timeout=timeout) as response:
        result = await _body(response)
    return Account(result["user_id"], result["access_token"])


async def _body(response: aiohttp.ClientResponse) -> dict[str, Any]:
    body: dict[str, Any] = await response.json(content_type=None)
    if response.status != 200:
        raise SetupError(f"{response.url.path} answered {response.status}: {body}")
    return body


async def fill_room(
    session: aiohttp.ClientSession,
    base_url: str,
    secret: str,
    members: int,
    concurrency: int,
    deadline: float,
) -> OriginRoom:
    """A public room (preset ``public_chat``: anyone may join, history ``shared``) of
    ``members`` members, creator included; none is started after ``deadline``."""
    room = OriginRoom(requested_members=members)
    client = MatrixClient(session, base_url)
    prefix = f"fj{uuid.uuid4().hex[:6]}"
    mark = time.perf_counter()
    creator = await admin_register(session, base_url, secret, f"{prefix}-creator")
    accounts = await bounded_map(
        (f"{prefix}-{i}" for i in range(members - 1)),
        lambda localpart: admin_register(session, base_url, secret, localpart),
        concurrency,
        deadline,
    )
    room.registered = 1 + len(accounts)
    room.register_seconds = round(time.perf_counter() - mark, 1)
    room.creator = creator
    room.room_id = await client.create_room(creator)
    mark = time.perf_counter()

    async def join(account: Account) -> None:
        await client.join(account, room.room_id)

    room.members = 1 + len(await bounded_map(accounts, join, concurrency, deadline))
    room.join_seconds = round(time.perf_counter() - mark, 1)
    room.truncated = room.members < members
    return room
