"""What a pusher's queue keeps while its gateway fails: positions and event IDs, not
events (a notification is built from the event as clients see it when it is sent, as
Synapse's ``HttpPusher._process_one`` reads it), and at most ``LIVE_QUEUE_MAX`` of them,
the rest read again from the database. Over HTTP against a real Peyvand on every
backend, with a gateway served by the test; the bound in process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import pytest
from aiohttp import web

from harness.client import MatrixClient, new_session, unique_localpart
from harness.local_http import start_post_site
from harness.ports import free_port
from harness.pusher_deps import fake_pusher_deps
from harness.server import HomeserverProcess, running_homeserver
from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS
from peyvand.federation.push_gateway import GatewayAnswer, GatewayError
from peyvand.services.push.delivery.pusher import (
    LIVE_QUEUE_MAX,
    HttpPusher,
    LivePush,
)
from peyvand.storage.notifications import Notification
from peyvand.storage.pushers import DeliveryState, PusherRow
from peyvand.types import EventID, JsonDict, RoomID, UserID

NOTIFY = "/_matrix/push/v1/notify"


class Gateway:
    """Answers 500 to the first ``failures`` requests, then 200; records them all."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[tuple[int, dict[str, Any]]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        notification = (await request.json())["notification"]
        status = 500 if self.failures > 0 else 200
        self.failures -= 1
        self.received.append((status, notification))
        if status == 500:
            return web.json_response({"error": "down"}, status=500)
        return web.json_response({"rejected": []})

    async def wait(self, status: int, within: float) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            for got, notification in self.received:
                if got == status:
                    return notification
            assert time.monotonic() < deadline, f"no {status} push: {self.received}"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def serve(gateway: Gateway) -> AsyncIterator[Gateway]:
    port = free_port()
    runner = await start_post_site("127.0.0.1", port, NOTIFY, gateway.handle)
    gateway.url = f"http://127.0.0.1:{port}{NOTIFY}"
    try:
        yield gateway
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
def push_server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeserverProcess]:
    with running_homeserver(
        backend,
        request,
        tmp_path_factory.mktemp("pushqueue"),
        options={"push.gateway_allowed_networks": '["127.0.0.1/32"]'},
    ) as server:
        yield server


async def test_push_redacted_while_the_gateway_failed_goes_out_without_content(
    push_server: HomeserverProcess,
) -> None:
    async with new_session() as session, serve(Gateway(failures=2)) as gateway:
        mc = MatrixClient(session, push_server.base_url)
        alice, bob, carol = await mc.register(), await mc.register(), await mc.register()
        room_id = (
            await mc.request("POST", "createRoom", json={"preset": "public_chat"}, token=alice)
        ).ok()["room_id"]
        for member in (bob, carol):
            (await mc.request("POST", f"join/{room_id}", json={}, token=member)).ok()
        body = {
            "kind": "http",
            "app_id": "im.peyvand.test",
            "pushkey": unique_localpart("pushkey"),
            "app_display_name": "Test app",
            "device_display_name": "Test phone",
            "lang": "en",
            "data": {"url": gateway.url},
        }
        (await mc.request("POST", "pushers/set", json=body, token=bob)).ok()
        event_id = (
            await mc.request(
                "PUT",
                f"rooms/{room_id}/send/m.room.message/{unique_localpart('txn')}",
                json={"msgtype": "m.text", "body": "the secret"},
                token=alice,
            )
        ).ok()["event_id"]
        failed = await gateway.wait(500, within=3)
        assert failed["content"]["body"] == "the secret"
        (
            await mc.request(
                "PUT",
                f"rooms/{room_id}/redact/{event_id}/{unique_localpart('txn')}",
                json={},
                token=alice,
            )
        ).ok()
        # Retried after 1 s, then 2 s: the third attempt is taken.
        pushed = await gateway.wait(200, within=6)
        assert pushed["event_id"] == event_id
        assert "the secret" not in str(pushed)
        assert "body" not in pushed.get("content", {})


# -- the bound, in process ---------------------------------------------------------------

USER = UserID("@bob:test")
ROOM = RoomID("!room:test")


def pdu(n: int) -> Pdu:
    data = {"type": "m.room.message", "room_id": ROOM, "sender": "@alice:test", "content": {}}
    return Pdu(data, EventID(f"$e{n}"), KNOWN_ROOM_VERSIONS["11"])


async def test_an_overflowing_live_queue_is_caught_up_on_from_the_database() -> None:
    release = asyncio.Event()
    sent: list[str] = []
    positions: list[int] = []
    stored: list[int] = []
    done = asyncio.Event()
    last = LIVE_QUEUE_MAX + 50

    async def notify(url: str, notification: JsonDict) -> GatewayAnswer:
        if not release.is_set():
            await release.wait()
            raise GatewayError("HTTP 500")
        sent.append(notification["event_id"])
        return GatewayAnswer(())

    async def pending(
        user_id: UserID, after: int, up_to: int, limit: int
    ) -> tuple[list[Notification], int]:
        found = [n for n in stored if after < n <= up_to][:limit]
        rows = [Notification(ROOM, n, EventID(f"$e{n}"), "main", False, 0) for n in found]
        return rows, found[-1] if len(found) == limit else up_to

    async def get_pdus(event_ids: Sequence[EventID]) -> Mapping[EventID, Pdu]:
        return {e: pdu(int(e[2:])) for e in event_ids}

    async def set_delivered(row: PusherRow, position: int, ts: int | None) -> bool:
        positions.append(position)
        if position == last:
            done.set()
        return True

    async def nothing(*args: Any) -> None:
        return None

    deps = fake_pusher_deps(
        notify=notify,
        pending=pending,
        get_pdus=get_pdus,
        set_delivered=set_delivered,
        set_failing_since=nothing,
        remove=nothing,
        now_ms=lambda: 10**12,
    )
    data: dict[str, Any] = {"url": "https://push.example/_matrix/push/v1/notify"}
    row = PusherRow(USER, "app", "key", None, "http", "App", "Phone", None, "en", data, 0)
    pusher = HttpPusher(DeliveryState(row, 0, None), catch_up_to=0, deps=deps)
    pusher.start()
    for n in range(1, last + 1):
        stored.append(n)
        pusher.on_push(LivePush(n, pdu(n), {}))
        await asyncio.sleep(0)
    assert len(pusher._live) <= LIVE_QUEUE_MAX
    release.set()
    async with asyncio.timeout(30):
        await done.wait()
    await pusher.stop()
    assert sent == [f"$e{n}" for n in range(1, last + 1)]
