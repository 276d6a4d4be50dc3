"""The appservice ping, over HTTP on every backend (Client-Server API v1.7,
``POST /_matrix/client/v1/appservice/{appserviceId}/ping``; Application Service API,
``POST /_matrix/app/v1/ping``): only an appservice's own ``as_token`` may ping it, and
each way it can fail is its own error (M_URL_NOT_SET, M_CONNECTION_FAILED, M_BAD_STATUS
with the status and body, M_CONNECTION_TIMEOUT)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from harness.appservice import RecordingAppService, write_registration
from harness.client import MatrixClient, new_session
from harness.ports import free_port
from harness.server import SERVER_NAME, HomeserverProcess, start_homeserver
from peyvand.errors import MatrixError
from peyvand.federation.appservice_client import AppServiceClient
from peyvand.services.appservice.ping import AppServicePing
from peyvand.services.appservice.registration import load_registrations

HS_TOKEN = "hs-token-ping"
# (appservice ID, as_token) of each registration.
PINGED = ("pinged", "as-token-pinged")
NO_URL = ("nourl", "as-token-nourl")
DOWN = ("down", "as-token-ping-down")
WRONG_TOKEN = ("wrongtoken", "as-token-wrongtoken")


def ping_path(appservice_id: str) -> str:
    return f"/_matrix/client/v1/appservice/{appservice_id}/ping"


@pytest.fixture(scope="module")
async def pinged() -> AsyncIterator[RecordingAppService]:
    appservice = RecordingAppService(HS_TOKEN)
    await appservice.start()
    try:
        yield appservice
    finally:
        await appservice.stop()


@pytest.fixture(scope="module")
def ping_homeserver(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pinged: RecordingAppService,
) -> Iterator[HomeserverProcess]:
    data_dir = tmp_path_factory.mktemp("appservice-ping")
    registrations = [
        (PINGED, pinged.url, HS_TOKEN),
        (NO_URL, None, "hs-token-nourl"),
        (DOWN, f"http://127.0.0.1:{free_port()}", "hs-token-down"),
        # The appservice expects HS_TOKEN: it answers this one 403.
        (WRONG_TOKEN, pinged.url, "hs-token-not-the-one"),
    ]
    files = [
        write_registration(
            data_dir / f"{appservice_id}.yaml",
            appservice_id=appservice_id,
            url=url,
            as_token=as_token,
            hs_token=hs_token,
            sender_localpart=f"{appservice_id}bot",
            user_regex=f"@{appservice_id}_.*:{SERVER_NAME}",
        )
        for (appservice_id, as_token), url, hs_token in registrations
    ]
    options = {"app_service_config_files": "[" + ", ".join(f'"{f}"' for f in files) + "]"}
    server = start_homeserver(backend, request, data_dir / "server", options=options)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def client(ping_homeserver: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, ping_homeserver.base_url)


async def test_ping_reaches_the_appservice(
    client: MatrixClient, pinged: RecordingAppService
) -> None:
    appservice_id, as_token = PINGED
    body = {"transaction_id": "mautrix-go_1683636478256400935_123"}
    answer = (await client.request("POST", ping_path(appservice_id), body, as_token)).ok()
    assert isinstance(answer["duration_ms"], int) and answer["duration_ms"] >= 0
    assert pinged.pings[-1] == body
    (await client.request("POST", ping_path(appservice_id), {}, as_token)).ok()
    assert pinged.pings[-1] == {}


async def test_only_the_appservice_itself_may_ping(
    client: MatrixClient, pinged: RecordingAppService
) -> None:
    user = await client.register()
    before = len(pinged.pings)
    for token in (user.access_token, NO_URL[1]):
        answer = await client.request("POST", ping_path(PINGED[0]), {}, token)
        assert answer.status == 403, answer.body
        assert answer.body["errcode"] == "M_FORBIDDEN"
    answer = await client.request("POST", ping_path("nosuchappservice"), {}, PINGED[1])
    assert answer.status == 403, answer.body
    assert len(pinged.pings) == before


async def test_ping_failures_have_the_spec_errors(client: MatrixClient) -> None:
    answer = await client.request("POST", ping_path(NO_URL[0]), {}, NO_URL[1])
    assert (answer.status, answer.body["errcode"]) == (400, "M_URL_NOT_SET")
    answer = await client.request("POST", ping_path(DOWN[0]), {}, DOWN[1])
    assert (answer.status, answer.body["errcode"]) == (502, "M_CONNECTION_FAILED")
    answer = await client.request("POST", ping_path(WRONG_TOKEN[0]), {}, WRONG_TOKEN[1])
    assert (answer.status, answer.body["errcode"]) == (502, "M_BAD_STATUS")
    assert answer.body["status"] == 403
    # The appservice's answer as it sent it (aiohttp's json.dumps spacing), not re-encoded.
    assert answer.body["body"] == '{"errcode": "M_FORBIDDEN", "error": "bad hs_token"}'


async def test_ping_bad_body(client: MatrixClient) -> None:
    appservice_id, as_token = PINGED
    answer = await client.request("POST", ping_path(appservice_id), [], as_token)
    assert (answer.status, answer.body["errcode"]) == (400, "M_NOT_JSON")
    body = {"transaction_id": 12}
    answer = await client.request("POST", ping_path(appservice_id), body, as_token)
    assert answer.status == 400, answer.body


async def test_a_ping_left_unanswered_times_out(tmp_path_factory: pytest.TempPathFactory) -> None:
    """M_CONNECTION_TIMEOUT from the ping service itself with a short limit (the
    server's is 30 s): a loopback listener that accepts and never answers."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    listener = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    path = write_registration(
        tmp_path_factory.mktemp("ping-timeout") / "silent.yaml",
        appservice_id="silent",
        url=f"http://127.0.0.1:{port}",
        as_token="as-token-silent",
        hs_token="hs-token-silent",
        sender_localpart="silentbot",
        user_regex=f"@silent_.*:{SERVER_NAME}",
    )
    (silent,) = load_registrations([path], SERVER_NAME)
    http = AppServiceClient()
    try:
        with pytest.raises(MatrixError) as raised:
            await AppServicePing(http, time_limit=0.2).ping(silent, "silent", None)
    finally:
        await http.close()
        listener.close()
    assert (raised.value.status, raised.value.errcode) == (504, "M_CONNECTION_TIMEOUT")
