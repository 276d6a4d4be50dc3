"""What a client reader keeps in memory follows the writer's changes (issue 21,
"Caches"): right after a write answered by the event writer, a read answered by the
reader (behind the same nginx) sees it, although the reader had cached the value before.
One deployment for the module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from harness.deployment import Deployment
from harness.nginx import Nginx

PASSWORD = "a long password"
WRITER_ROLES = ["event_writer", "federation_inbound", "federation_sender", "media", "background"]


@pytest.fixture(scope="module")
def front(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Nginx]:
    data_dir = tmp_path_factory.mktemp("reader_caches")
    deployment = Deployment(
        request, data_dir, {"writer": WRITER_ROLES, "reader": ["client_reader"]}
    )
    nginx = Nginx(deployment["writer"].config_path, data_dir / "nginx")
    try:
        for process in deployment.processes.values():
            process.start()
        nginx.start()
        yield nginx
    finally:
        nginx.stop()
        deployment.stop()


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base
        self.token = ""
        self.user_id = ""

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        status: int = 200,
        worker: str | None = None,
        **params: str,
    ) -> dict[str, Any]:
        """The answer of a request that must get ``status`` from ``worker`` (if given)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(
            method, f"{self.base}/_matrix/client/v3{path}", json=body, params=params,
            headers=headers, timeout=aiohttp.ClientTimeout(total=30),
        ) as response:  # fmt: skip
            answer: dict[str, Any] = await response.json()
            assert response.status == status, (method, path, response.status, answer)
            if worker is not None:
                assert response.headers["X-Peyvand-Worker"] == worker, (method, path)
            return answer

    async def register(self, name: str) -> None:
        body = {"username": name, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
        answer = await self.call("POST", "/register", body)
        self.token, self.user_id = answer["access_token"], answer["user_id"]

    async def login(self, name: str) -> None:
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": name},
            "password": PASSWORD,
        }
        answer = await self.call("POST", "/login", body)
        self.token, self.user_id = answer["access_token"], answer["user_id"]

    def password_auth(self) -> dict[str, Any]:
        return {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": self.user_id},
            "password": PASSWORD,
        }


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as opened:
        yield opened


async def test_a_token_revoked_on_the_writer_is_refused_by_the_reader_at_once(
    front: Nginx, session: aiohttp.ClientSession
) -> None:
    alice = Client(session, front.base_url)
    await alice.register("tok_alice")
    # A second session, used (so cached) on the reader, then logged out on the writer.
    second = Client(session, front.base_url)
    await second.login("tok_alice")
    for _ in range(3):
        await second.call("GET", "/account/whoami", worker="reader")
    await second.call("POST", "/logout", {}, worker="writer")
    refused = await second.call("GET", "/account/whoami", status=401, worker="reader")
    assert refused["errcode"] == "M_UNKNOWN_TOKEN"
    await alice.call("GET", "/account/whoami", worker="reader")  # the other session stays

    # A deactivated account's tokens: every one of them.
    for _ in range(3):
        await alice.call("GET", "/account/whoami", worker="reader")
    await alice.call("POST", "/account/deactivate", {"auth": alice.password_auth()})
    refused = await alice.call("GET", "/account/whoami", status=401, worker="reader")
    assert refused["errcode"] == "M_UNKNOWN_TOKEN"
