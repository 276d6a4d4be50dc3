"""``python -m bench.push_fanout``: one message to a room of N users who all have a pusher.

Issue 17: how long until the last push reaches the gateway, and what the server's CPU is
per 1,000 pushes, for Peyvand and (``--server synapse``) Synapse's pusher side by side.
Each runs on a fresh SQLite data directory (bcrypt lowered, since only set-up registers
users), allowed to reach a gateway this process serves on 127.0.0.1 (Peyvand's
``push.gateway_allowed_networks``, Synapse's ``ip_range_whitelist``), which answers 200
at once and notes when each notification arrived. Each of ``--messages`` messages is
sent once the previous one's pushes have all arrived; CPU is the server's process tree
(utime + stime) over the messages. Bounded: set-up at most 30 minutes, each message at most 60 s.

    python -m bench.push_fanout [--server peyvand|synapse] [--users 1000] [--messages 5]
        [--profile stacks.txt]

``--profile`` attaches ``py-spy record`` (raw collapsed stacks) during the messages.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from aiohttp import web

from bench import procstat
from bench.client import Account, MatrixClient, new_session
from bench.servers import PeyvandServer, Server, SynapseServer, ensure_synapse, free_port
from bench.workloads import bounded_map

NOTIFY = "/_matrix/push/v1/notify"
SETUP_CONCURRENCY = 8
SETUP_SECONDS = 1800.0
MESSAGE_SECONDS = 60.0


class Gateway:
    """Answers 200 at once; counts the notifications of each event as they arrive."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = {}
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        notification = (await request.json())["notification"]
        event_id = notification.get("event_id")
        if isinstance(event_id, str):
            self.arrivals.setdefault(event_id, []).append(time.perf_counter())
            self.changed.set()
        return web.json_response({"rejected": []})

    async def wait_for(self, event_id: str, count: int) -> float:
        """When the ``count``-th notification of ``event_id`` arrived."""
        deadline = time.perf_counter() + MESSAGE_SECONDS
        while len(self.arrivals.get(event_id, [])) < count:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{len(self.arrivals.get(event_id, []))} of {count} pushes")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), 1.0)
            except TimeoutError:
                continue
        return self.arrivals[event_id][count - 1]


def _peyvand(data_dir: Path) -> Server:
    server = PeyvandServer(data_dir, bcrypt_rounds=4)
    text = server.config_path.read_text(encoding="utf-8")
    text = re.sub(
        r"^gateway_allowed_networks = \[\]$",
        'gateway_allowed_networks = ["127.0.0.1/32"]',
        text,
        flags=re.M,
    )
    server.config_path.write_text(text, encoding="utf-8")
    return server


def _synapse(data_dir: Path) -> Server:
    ensure_synapse()
    return SynapseServer(
        data_dir, extra_config={"bcrypt_rounds": 4, "ip_range_whitelist": ["127.0.0.1"]}
    )


async def run(kind: str, users: int, messages: int, profile: Path | None) -> None:
    gateway = Gateway()
    app = web.Application()
    app.router.add_post(NOTIFY, gateway.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    with tempfile.TemporaryDirectory(prefix="push-fanout-") as tmp:
        server = _synapse(Path(tmp)) if kind == "synapse" else _peyvand(Path(tmp))
        server.start()
        try:
            async with new_session() as session:
                client = MatrixClient(session, server.base_url)
                await _measure(client, server, gateway, port, users, messages, profile)
        finally:
            server.stop()
            await runner.cleanup()


async def _measure(
    client: MatrixClient,
    server: Server,
    gateway: Gateway,
    port: int,
    users: int,
    messages: int,
    profile: Path | None,
) -> None:
    deadline = time.perf_counter() + SETUP_SECONDS
    sender = await client.register("sender")
    room_id = await client.create_room(sender)
    url = f"http://127.0.0.1:{port}{NOTIFY}"

    async def member(index: int) -> Account:
        account = await client.register(f"member{index}")
        await client.join(account, room_id)
        reply = await client.request(
            "POST",
            "pushers/set",
            {
                "kind": "http",
                "app_id": "bench",
                "pushkey": f"key{index}",
                "app_display_name": "bench",
                "device_display_name": "bench",
                "lang": "en",
                "data": {"url": url},
            },
            account.access_token,
        )
        if reply.status != 200:
            raise RuntimeError(f"pushers/set: {reply.status} {reply.body}")
        return account

    started = time.perf_counter()
    members = await bounded_map(range(users), member, SETUP_CONCURRENCY, deadline)
    if len(members) != users:
        raise RuntimeError(f"set-up made {len(members)} of {users} members in time")
    print(f"set-up: {users} members with pushers in {time.perf_counter() - started:.0f} s")
    latencies = []
    spy = None
    if profile is not None:
        spy = await asyncio.create_subprocess_exec(
            "py-spy", "record", "-p", str(server.pid), "-r", "200", "-f", "raw",
            "-o", str(profile), "--nonblocking",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.sleep(1.0)
    cpu_before = procstat.tree_cpu_seconds(server.pid)
    for index in range(messages):
        sent = time.perf_counter()
        reply = await client.send(sender, room_id, f"m{index}", f"message {index}")
        if reply.status != 200:
            raise RuntimeError(f"send: {reply.status} {reply.body}")
        last = await gateway.wait_for(reply.body["event_id"], users)
        latencies.append(last - sent)
    cpu = procstat.tree_cpu_seconds(server.pid) - cpu_before
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        await asyncio.wait_for(spy.wait(), 60)
    pushes = users * messages
    print(
        f"{server.name}: {users} pushers, {messages} messages: until the last push "
        + ", ".join(f"{s:.2f}" for s in latencies)
        + f" s; server CPU {cpu:.2f} s = {cpu / pushes * 1000:.2f} s per 1,000 pushes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("peyvand", "synapse"), default="peyvand")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args()
    asyncio.run(run(args.server, args.users, args.messages, args.profile))


if __name__ == "__main__":
    main()
