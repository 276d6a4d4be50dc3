"""``python -m bench.hot_room``: the CPU a message costs in one room of many members.

Issue 15 ("hot room"): 16 senders into one room; what does each message cost the server,
and how does that grow with the member count? Set-up (registering members costs a bcrypt
hash each) is done once and kept, so the same room can be measured before and after a
change, against whatever code the server now runs:

    python -m bench.hot_room setup DIR --members 200
    python -m bench.hot_room measure DIR --messages 1000 [--profile stacks.txt]

``measure`` restarts Peyvand on DIR, warms up, then has the senders send ``--messages`` in
all (bounded in time too) and prints the server's CPU seconds (utime + stime of its process
tree, so other load on the machine does not count) per 1,000 messages, with throughput and
send latency. ``--profile`` attaches ``py-spy record`` (raw collapsed stacks) meanwhile.
By default nobody syncs (the write path and its fan-out alone); ``--syncers N`` has the
first N members long-poll /sync meanwhile, as Element does (lazy-loaded members), and
prints their delivery p50/p99 (as the hot room of ``bench.rooms`` counts it) and the
server CPU per answered long-poll.

How many messages a woken sync finds depends on how fast the server answers (a busy
server answers fewer syncs, each with more), so ``measure`` with syncers mixes the cost of
a wake-up with how many there were. ``wake`` measures one wake-up alone:

    python -m bench.hot_room wake DIR --syncers 200 --gap 24 --rounds 10 [--profile stacks.txt]

Each round, ``--gap`` messages are sent; then every syncer syncs at once from its last
token (so each finds the same ``--gap`` new messages: a limited timeline past 10); it
prints the server's CPU per 1,000 of those syncs and their latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench import procstat
from bench.client import Account, MatrixClient, new_session
from bench.room_workloads import Deliveries, Sent, drain_deliveries, first_tokens
from bench.servers import PeyvandServer, Server
from bench.workloads import DELIVERY_FILTER, bounded_map, percentile

SETUP_CONCURRENCY = 8
SETUP_SECONDS = 1800.0
WARM_UP_MESSAGES = 100
MEASURE_SECONDS = 120.0
WARM_UP_SECONDS = 5.0
DRAIN_SECONDS = 15.0
_STATE = "hot-room.json"


class _ExistingPeyvand(Server):
    """Peyvand on a data directory ``setup`` made, on the port its config names."""

    name = "peyvand"

    def __init__(self, data_dir: Path, port: int) -> None:
        super().__init__(data_dir)
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"

    def command(self) -> list[str]:
        config = str(self.data_dir / "peyvand.toml")
        return [sys.executable, "-m", "peyvand", "serve", "--config", config]


async def _setup(server: Server, members: int) -> dict[str, object]:
    async with new_session() as session:
        client = MatrixClient(session, server.base_url)
        prefix = f"hot{uuid.uuid4().hex[:6]}"
        deadline = time.perf_counter() + SETUP_SECONDS
        accounts = await bounded_map(
            (f"{prefix}-{i}" for i in range(members)),
            client.register,
            SETUP_CONCURRENCY,
            deadline,
        )
        room = await client.create_room(accounts[0])
        await bounded_map(accounts[1:], lambda a: client.join(a, room), SETUP_CONCURRENCY, deadline)
    return {
        "port": server.port,
        "room": room,
        "accounts": [[a.user_id, a.access_token] for a in accounts],
    }


async def _send_all(
    client: MatrixClient,
    senders: list[Account],
    room: str,
    count: int,
    tag: str,
    deliveries: Deliveries | None = None,
) -> tuple[int, list[float], float]:
    """``count`` messages from ``senders`` in turn; (sent, latencies, wall seconds). Each
    sent message is noted in ``deliveries``, if given, to time its delivery."""
    latencies: list[float] = []
    deadline = time.perf_counter() + MEASURE_SECONDS
    started = time.perf_counter()

    async def one(n: int) -> None:
        sender = senders[n % len(senders)]
        begun = time.perf_counter()
        reply = await client.send(sender, room, f"{tag}-{n}", f"m {n}")
        if reply.status == 200:
            latencies.append(reply.seconds)
            if deliveries is not None:
                ended = time.perf_counter()
                deliveries.sent[reply.body["event_id"]] = Sent(sender.user_id, begun, ended)

    await bounded_map(range(count), one, len(senders), deadline)
    return len(latencies), latencies, time.perf_counter() - started


async def _measure(server: Server, state: dict[str, object], args: argparse.Namespace) -> None:
    """Send ``--messages`` while the first ``--syncers`` members long-poll /sync as the
    hot room of ``bench.rooms`` does (``Deliveries``): delivery from each send's 200 to
    each other syncer's /sync returning the event, after a drain of up to 15 s."""
    accounts = [Account(u, t) for u, t in state["accounts"]]  # type: ignore[attr-defined]
    senders = accounts[: args.senders]
    room = str(state["room"])
    tag = uuid.uuid4().hex[:6]
    async with new_session() as session:
        client = MatrixClient(session, server.base_url)
        deadline = time.perf_counter() + MEASURE_SECONDS
        tokens = await first_tokens(client, accounts[: args.syncers], SETUP_CONCURRENCY, deadline)
        deliveries = Deliveries(room, [account for account, _ in tokens])
        stop_at = deadline + WARM_UP_SECONDS + DRAIN_SECONDS
        polls = [
            asyncio.create_task(deliveries.poll(client, account, since, stop_at))
            for account, since in tokens
        ]
        await asyncio.sleep(WARM_UP_SECONDS if args.syncers else 0)
        await _send_all(client, senders, room, WARM_UP_MESSAGES, f"w{tag}")
        deliveries.limited_syncs = 0
        answered_before = deliveries.answered
        for user_id in deliveries.seen:
            deliveries.seen[user_id].clear()
            deliveries.gap_ends[user_id].clear()
        spy = await _profiled(server, args.profile)
        cpu_before = procstat.tree_cpu_seconds(server.pid)
        sent, latencies, seconds = await _send_all(
            client, senders, room, args.messages, tag, deliveries
        )
        cpu = procstat.tree_cpu_seconds(server.pid) - cpu_before
        answered = deliveries.answered - answered_before
        await _stop_profile(spy)
        cut = await drain_deliveries(deliveries, polls, DRAIN_SECONDS)
    delivered, skipped, missing = deliveries.tally()
    print(
        f"members={len(accounts)} senders={len(senders)} syncers={args.syncers} "
        f"sent={sent}/{args.messages} in {seconds:.1f} s ({sent / seconds:.0f}/s); "
        f"server CPU {cpu:.2f} s = {cpu / sent * 1000:.2f} s per 1,000 messages; send p50 "
        f"{percentile(latencies, 50) * 1000:.0f} ms, p99 {percentile(latencies, 99) * 1000:.0f} ms"
    )
    if args.syncers:
        print(
            f"answered {answered} long-polls while sending: "
            f"{cpu / max(1, answered) * 1000:.3f} ms of server CPU each (sends included)"
        )
        print(
            f"delivery p50 {percentile(delivered, 50) * 1000:.0f} ms, "
            f"p99 {percentile(delivered, 99) * 1000:.0f} ms ({len(delivered)} deliveries, "
            f"{skipped} skipped, {missing} missing, {deliveries.limited_syncs} limited "
            f"syncs{', drain cut short' if cut else ''})"
        )


async def _profiled(server: Server, profile: Path | None) -> asyncio.subprocess.Process | None:
    """``py-spy record`` attached to the server (raw collapsed stacks), if asked for."""
    if profile is None:
        return None
    spy = await asyncio.create_subprocess_exec(
        "py-spy", "record", "-p", str(server.pid), "-r", "200", "-f", "raw",
        "-o", str(profile), "--nonblocking",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.sleep(1.0)
    return spy


async def _stop_profile(spy: asyncio.subprocess.Process | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        await asyncio.wait_for(spy.wait(), 60)


async def _wake(server: Server, state: dict[str, object], args: argparse.Namespace) -> None:
    accounts = [Account(u, t) for u, t in state["accounts"]]  # type: ignore[attr-defined]
    syncers, sender = accounts[: args.syncers], accounts[0]
    room = str(state["room"])
    tag = uuid.uuid4().hex[:6]
    async with new_session() as session:
        client = MatrixClient(session, server.base_url)
        deadline = time.perf_counter() + MEASURE_SECONDS

        async def first(account: Account) -> str:
            reply = await client.sync(account, sync_filter=DELIVERY_FILTER)
            if reply.status != 200:
                raise RuntimeError(f"initial /sync answered {reply.status}: {reply.body}")
            return str(reply.body["next_batch"])

        tokens = await bounded_map(syncers, first, SETUP_CONCURRENCY, deadline)
        latencies: list[float] = []
        cpu = 0.0
        spy = await _profiled(server, args.profile)
        for round_ in range(args.rounds):
            if time.perf_counter() > deadline:
                break
            for n in range(args.gap):
                await client.send(sender, room, f"{tag}-{round_}-{n}", f"m {round_} {n}")
            cpu_before = procstat.tree_cpu_seconds(server.pid)
            replies = await asyncio.gather(
                *(
                    client.sync(a, t, 0, DELIVERY_FILTER)
                    for a, t in zip(syncers, tokens, strict=True)
                )
            )
            cpu += procstat.tree_cpu_seconds(server.pid) - cpu_before
            if failed := [r for r in replies if r.status != 200]:
                raise RuntimeError(f"/sync answered {failed[0].status}: {failed[0].body}")
            latencies += [r.seconds for r in replies]
            tokens = [str(r.body["next_batch"]) for r in replies]
        await _stop_profile(spy)
    syncs = len(latencies)
    print(
        f"syncers={len(syncers)} gap={args.gap} rounds={syncs // max(1, len(syncers))}: "
        f"server CPU {cpu:.2f} s = {cpu / syncs * 1000:.2f} s per 1,000 woken syncs; "
        f"sync p50 {percentile(latencies, 50) * 1000:.0f} ms, "
        f"p99 {percentile(latencies, 99) * 1000:.0f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hot_room")
    parser.add_argument("phase", choices=("setup", "measure", "wake"))
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--syncers", type=int, default=0, help="members long-polling /sync")
    parser.add_argument("--gap", type=int, default=24, help="wake: messages per round")
    parser.add_argument("--rounds", type=int, default=10, help="wake: rounds")
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    if args.profile is not None and shutil.which("py-spy") is None:
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 1
    state_path = args.data_dir / _STATE
    server: Server
    if args.phase == "setup":
        args.data_dir.mkdir(parents=True)
        server = PeyvandServer(args.data_dir)
    else:
        state = json.loads(state_path.read_text())
        server = _ExistingPeyvand(args.data_dir, int(state["port"]))
    server.start()
    try:
        if args.phase == "setup":
            state_path.write_text(json.dumps(asyncio.run(_setup(server, args.members))))
        elif args.phase == "wake":
            asyncio.run(_wake(server, state, args))
        else:
            asyncio.run(_measure(server, state, args))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
