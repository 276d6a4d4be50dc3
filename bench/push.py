"""``python -m bench.push [--users N] [--messages M] [--postgres] [--only NAME] [--smoke]``:
push fan-out, Peyvand and Synapse side by side (issue 17).

N users, each with an ``http`` pusher of its own (a unique pushkey), are in one room; one
of them sends M messages, one at a time: the next once the gateway has the previous one's
notification for every other user, or after ``push_wait_seconds`` (120 s; 30 s at
``--smoke``). For each message: from the start of its send until its last push (and its
first) reached the gateway. Pushes are counted ``settle_seconds`` after the last message's
wait: what has not arrived by then is ``missing`` (a push that arrived during a later
message's wait counts, late). CPU is the server's process tree (utime + stime,
``bench.procstat``) over the same span, from just before the first send, so the sends, the
push-rule evaluation, the notifications and the pushers' bookkeeping all count; divided
per 1,000 pushes that arrived. With ``--postgres`` the database's processes are in neither
server's tree: neither figure includes PostgreSQL's CPU.

The gateway (``bench.push_gateway``) runs in this process on 127.0.0.1 and answers
``{"rejected": []}`` at once. Both servers are told that this loopback gateway is allowed:
Peyvand's ``push.gateway_allowed_networks``, Synapse's ``ip_range_whitelist`` (its pushers
post through its IP-range-guarded HTTP client). Synapse runs its pushers in the main
process (its default). Each server starts fresh (new data directory, or a new database on
one throwaway PostgreSQL cluster), one after the other, so they never compete for cores.

Set-up is not timed: registration (bcrypt cost 4 on both, as ``bench.rooms``), pushers and
joins, ``setup_concurrency`` at a time; then the server is left until its CPU goes quiet
(at most ``QUIET_MAX_SECONDS``), so that work left over from the joins is not counted.
A set-up cut short by its bound is reported as ``truncated`` and measured with the members
it reached. The table goes to stdout, the figures to
``bench/results/push-<timestamp>-<db>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import procstat, report
from bench.client import Account, MatrixClient, new_session
from bench.push_gateway import PushGateway
from bench.run import RESULTS_DIR, log, measure_each, publish, run_bounded
from bench.servers import PeyvandServer, Server, SynapseServer, ensure_synapse
from bench.workloads import Clock, bounded_map, percentile

SETUP_BCRYPT_ROUNDS = 4
STOP_RESERVE_SECONDS = 15.0
QUIET_WINDOW_SECONDS = 1.0
QUIET_CPU_SECONDS = 0.05  # per window: 5% of one core
QUIET_MAX_SECONDS = 60.0
APP_ID = "org.peyvand.bench"
CpuProbe = Callable[[], float]


@dataclass(frozen=True, slots=True)
class PushSizes:
    users: int = 1000
    messages: int = 5
    setup_concurrency: int = 8
    setup_seconds: float = 1500.0
    push_wait_seconds: float = 120.0
    settle_seconds: float = 1.0
    server_budget_seconds: float = 1800.0


FULL = PushSizes()
SMOKE = PushSizes(
    users=20, messages=2, setup_seconds=60.0, push_wait_seconds=30.0,
    settle_seconds=0.2, server_budget_seconds=180.0,
)  # fmt: skip


@dataclass(slots=True)
class PushFigures:
    """One server's run. Latencies per message, in ms from the start of its send."""

    name: str = ""
    version: str = ""
    users: int = 0
    truncated: bool = False
    setup_seconds: float = math.nan
    messages: int = 0
    send_errors: int = 0
    pushes_expected: int = 0
    pushes_arrived: int = 0
    missing: int = 0
    repeats: int = 0
    last_push_ms: list[float] = field(default_factory=list)
    first_push_ms: list[float] = field(default_factory=list)
    quiet_cpu_seconds: float = math.nan
    cpu_seconds: float = math.nan

    @property
    def cpu_seconds_per_1000_pushes(self) -> float:
        if self.pushes_arrived == 0:
            return math.nan
        return self.cpu_seconds / self.pushes_arrived * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.push", description=__doc__)
    parser.add_argument("--users", type=int, help="room members with a pusher (sender included)")
    parser.add_argument("--messages", type=int, help="messages sent, one at a time")
    parser.add_argument("--postgres", action="store_true", help="both on one PostgreSQL cluster")
    parser.add_argument("--only", choices=["peyvand", "synapse"], help="run one server only")
    parser.add_argument("--smoke", action="store_true", help="20 users, 2 messages")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if args.users is not None:
        if args.users < 2:
            parser.error("--users: at least 2 (a sender and one user to push to)")
        sizes = dataclasses.replace(sizes, users=args.users)
    if args.messages is not None:
        if args.messages < 1:
            parser.error("--messages: at least 1")
        sizes = dataclasses.replace(sizes, messages=args.messages)
    names = [args.only] if args.only else ["peyvand", "synapse"]
    if "synapse" in names:
        ensure_synapse()
    database = "postgres" if args.postgres else "sqlite"
    started = time.monotonic()
    results = measure_each(
        names,
        args.postgres,
        sizes.server_budget_seconds,
        lambda name, url: _measure(name, url, sizes),
    )
    publish(
        args.out,
        "push",
        benchmark="push fan-out",
        database=database,
        sizes=asdict(sizes),
        servers={name: _to_json(figures) for name, figures in results.items()},
        summary=summarize(results.get("peyvand"), results.get("synapse")),
        started=started,
    )
    return 0


def _new_server(name: str, data_dir: Path, database_url: str | None) -> Server:
    """A server whose pushers may post to a gateway on 127.0.0.1."""
    if name == "synapse":
        extra = {"bcrypt_rounds": SETUP_BCRYPT_ROUNDS, "ip_range_whitelist": ["127.0.0.1"]}
        return SynapseServer(data_dir, database_url, extra)
    server = PeyvandServer(data_dir, database_url, SETUP_BCRYPT_ROUNDS)
    text = server.config_path.read_text(encoding="utf-8")
    text, count = re.subn(
        r"^gateway_allowed_networks = \[\]$",
        'gateway_allowed_networks = ["127.0.0.1/32"]',
        text,
        flags=re.M,
    )
    if count != 1:
        raise RuntimeError("the generated config has no gateway_allowed_networks line")
    server.config_path.write_text(text, encoding="utf-8")
    return server


def _measure(name: str, database_url: str | None, sizes: PushSizes) -> PushFigures:
    """One server, fresh in a new data directory that is removed afterwards, whatever fails."""
    stop_by = time.perf_counter() + sizes.server_budget_seconds
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-push-{name}-"))
    server: Server | None = None
    try:
        server = _new_server(name, data_dir, database_url)
        server.start()
        pid = server.pid
        clock = Clock(stop_by - STOP_RESERVE_SECONDS)
        figures = run_bounded(
            run_push(server.base_url, lambda: procstat.tree_cpu_seconds(pid), sizes, clock), clock
        )
        figures.name, figures.version = name, server.version()
        return figures
    except BaseException:
        if server is not None:
            log(f"  {name} failed; the last lines of its log:\n{server.tail()}")
        raise
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


async def run_push(base_url: str, cpu: CpuProbe, sizes: PushSizes, clock: Clock) -> PushFigures:
    """Set up the room and its pushers against ``base_url``, then send and time the pushes."""
    figures = PushFigures()
    gateway = PushGateway()
    await gateway.start()
    try:
        async with new_session() as session:
            client = MatrixClient(session, base_url)
            mark = time.perf_counter()
            sender, room_id, others = await _set_up(client, gateway.url, sizes, clock)
            figures.setup_seconds = round(time.perf_counter() - mark, 1)
            figures.users = others + 1
            figures.truncated = figures.users < sizes.users
            log(f"  set-up: {figures.users} users with pushers in {figures.setup_seconds} s")
            figures.quiet_cpu_seconds = await _quiet(cpu, clock)
            await _send_all(client, gateway, sender, room_id, others, cpu, sizes, clock, figures)
    finally:
        await gateway.stop()
    log(
        f"  {figures.messages} messages: last push p50 {percentile(figures.last_push_ms, 50):.0f}"
        f" ms, {figures.missing} missing, CPU {figures.cpu_seconds_per_1000_pushes:.2f} s"
        " per 1,000 pushes"
    )
    return figures


async def _set_up(
    client: MatrixClient, gateway_url: str, sizes: PushSizes, clock: Clock
) -> tuple[Account, str, int]:
    """The sender, its room, and how many other users joined it, each with a pusher."""
    prefix = f"push{uuid.uuid4().hex[:6]}"
    sender = await client.register(f"{prefix}-0")
    await _set_pusher(client, sender, f"{prefix}-key-0", gateway_url)
    room_id = await client.create_room(sender)

    async def member(index: int) -> None:
        account = await client.register(f"{prefix}-{index}")
        await _set_pusher(client, account, f"{prefix}-key-{index}", gateway_url)
        await client.join(account, room_id)

    deadline = clock.after(sizes.setup_seconds)
    joined = await bounded_map(range(1, sizes.users), member, sizes.setup_concurrency, deadline)
    return sender, room_id, len(joined)


async def _set_pusher(client: MatrixClient, account: Account, pushkey: str, url: str) -> None:
    body = {
        "kind": "http",
        "app_id": APP_ID,
        "pushkey": pushkey,
        "app_display_name": "bench",
        "device_display_name": "bench",
        "lang": "en",
        "data": {"url": url},
    }
    reply = await client.request("POST", "pushers/set", body, account.access_token)
    if reply.status != 200:
        raise RuntimeError(f"pushers/set answered {reply.status}: {reply.body}")


async def _quiet(cpu: CpuProbe, clock: Clock) -> float:
    """Wait until a window passes with the server's CPU under ``QUIET_CPU_SECONDS``, at most
    ``QUIET_MAX_SECONDS``; the CPU of the last window."""
    deadline = clock.after(QUIET_MAX_SECONDS)
    used = math.nan
    while time.perf_counter() < deadline:
        before = cpu()
        await asyncio.sleep(QUIET_WINDOW_SECONDS)
        used = cpu() - before
        if used < QUIET_CPU_SECONDS:
            break
    return used


async def _send_all(
    client: MatrixClient,
    gateway: PushGateway,
    sender: Account,
    room_id: str,
    others: int,
    cpu: CpuProbe,
    sizes: PushSizes,
    clock: Clock,
    figures: PushFigures,
) -> None:
    """Send ``sizes.messages`` one after another, each once its pushes arrived or its wait
    ran out. Counted after the last settle, so a push that arrived late (during a later
    message's wait) counts as arrived, as its CPU does; its lateness shows in the latency."""
    sent: list[tuple[str, float]] = []
    cpu_before = cpu()
    for index in range(sizes.messages):
        if time.perf_counter() > clock.stop_by:
            break
        started = time.perf_counter()
        reply = await client.send(sender, room_id, f"push{index}", f"push bench message {index}")
        figures.messages += 1
        if reply.status != 200:
            figures.send_errors += 1
            continue
        sent.append((reply.body["event_id"], started))
        await gateway.wait_for(sent[-1][0], others, clock.after(sizes.push_wait_seconds))
    await asyncio.sleep(sizes.settle_seconds)
    figures.cpu_seconds = cpu() - cpu_before
    for event_id, started in sent:
        arrivals = gateway.arrivals.get(event_id, {})
        figures.pushes_expected += others
        figures.pushes_arrived += len(arrivals)
        if arrivals:
            figures.last_push_ms.append((max(arrivals.values()) - started) * 1000)
            figures.first_push_ms.append((min(arrivals.values()) - started) * 1000)
    figures.missing = figures.pushes_expected - figures.pushes_arrived
    figures.repeats = gateway.repeats


def summarize(peyvand: PushFigures | None, synapse: PushFigures | None) -> dict[str, Any]:
    """The rows of the side-by-side table (no targets: the issue sets none)."""

    def row(key: str, label: str, unit: str, value: Callable[[PushFigures], float]) -> Any:
        return report.row(
            key,
            label,
            unit,
            False,
            float(value(peyvand)) if peyvand else math.nan,
            float(value(synapse)) if synapse else math.nan,
        )

    rows = [
        row("last_p50", "until the last push, p50 over messages", "ms",
            lambda f: percentile(f.last_push_ms, 50)),
        row("last_max", "until the last push, max", "ms",
            lambda f: max(f.last_push_ms, default=math.nan)),
        row("first_p50", "until the first push, p50", "ms",
            lambda f: percentile(f.first_push_ms, 50)),
        row("cpu", "server CPU per 1,000 pushes", "s", lambda f: f.cpu_seconds_per_1000_pushes),
        row("missing", "pushes missing", "count", lambda f: f.missing),
        row("repeats", "pushes repeated", "count", lambda f: f.repeats),
        row("send_errors", "send errors", "count", lambda f: f.send_errors),
    ]  # fmt: skip
    users = report.row(
        "users",
        "users with pushers (sender included)",
        "count",
        True,
        float(peyvand.users) if peyvand else math.nan,
        float(synapse.users) if synapse else math.nan,
    )
    return report.summarize([users, *rows], [])


def _to_json(figures: PushFigures) -> dict[str, Any]:
    return {
        **asdict(figures),
        "cpu_seconds_per_1000_pushes": figures.cpu_seconds_per_1000_pushes,
    }


if __name__ == "__main__":
    raise SystemExit(main())
