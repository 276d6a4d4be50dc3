"""The bcrypt cost of new password hashes is ``registration.bcrypt_rounds`` (docs/config.md),
12 by default as Synapse; hashes made with another cost still verify."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from harness.client import MatrixClient, new_session
from harness.database import query
from harness.server import HomeserverProcess, start_homeserver


@pytest.fixture(scope="module")
def cheap_hashing_server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeserverProcess]:
    server = start_homeserver(
        backend,
        request,
        tmp_path_factory.mktemp("bcrypt"),
        options={"registration.open": "true", "registration.bcrypt_rounds": "4"},
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def cheap_client(cheap_hashing_server: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, cheap_hashing_server.base_url)


async def _stored_hash(server: HomeserverProcess, user_id: str) -> str:
    rows = await query(server, "SELECT password_hash FROM users WHERE user_id = $1", user_id)
    assert len(rows) == 1
    value = rows[0][0]
    assert isinstance(value, str)
    return value


async def test_new_hashes_use_the_configured_cost_and_log_in(
    cheap_hashing_server: HomeserverProcess, cheap_client: MatrixClient
) -> None:
    account = await cheap_client.register(password="correct horse")
    assert (await _stored_hash(cheap_hashing_server, account.user_id)).startswith("$2b$04$")
    again = await cheap_client.login(account.user_id, "correct horse")
    assert again.user_id == account.user_id
    wrong = await cheap_client.request(
        "POST",
        "login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": account.user_id},
            "password": "wrong horse",
        },
    )
    assert wrong.status == 403


async def test_the_default_cost_is_twelve(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    account = await client.register()
    assert (await _stored_hash(homeserver, account.user_id)).startswith("$2b$12$")
