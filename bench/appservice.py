"""``python -m bench.appservice [--rate R] [--senders N] [--seconds S] [--postgres]
[--only NAME] [--smoke]``: an application service in a room with 1,000 messages a second
arriving, Peyvand and Synapse side by side (issue 20).

An appservice (``bench.appservice_receiver``, a process of its own on 127.0.0.1) is
registered on the server (``app_service_config_files`` on both) with a user namespace and
``rate_limited: false``; its bot joins one public room with the ``as_token``, which gives
the appservice interest in every event of that room. N ordinary users (rate limits off on
both servers) join the room and send into it at a steady R messages a second in all:
sender i sends the room's messages i, i + N, i + 2N, ... each at its slot (message k at
start + k / R), or at once when it is behind its slots, one request at a time, so at most
N sends are in flight and a server that cannot keep up gets fewer than R a second (the
achieved rate says how many). Each message's body carries its index and the moment its
send started. The first ``warm_up_seconds`` are not measured; the messages whose send
started in the next ``measure_seconds`` are. Then the bench waits (at most
``drain_seconds``) until the appservice has every message that was sent.

Figures, over the measured messages: the achieved send rate (the PUTs answered 200 by the
window's length) and their latency; for each one the appservice received, the time from
the PUT's 200 reaching the client to the transaction carrying it reaching the appservice
(negative when the transaction came first), and from the start of the PUT; events per
transaction over the transactions that carried at least one measured message; messages
the appservice never got (``missing``) and transactions sent again (``repeats``); the
server's CPU (utime + stime of its process tree, ``bench.procstat``) from the window's
start until the wait ends, per 1,000 measured messages, and beside it the bench's own
(its senders and the receiver), which shares the machine's cores with the server.
Set-up (registration at bcrypt cost 4 on both, the room, the joins) is not measured.
Every loop is bounded in count and in time; the table goes to stdout, the figures to
``bench/results/appservice-<timestamp>-<db>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from bench import procstat, report
from bench.appservice_receiver import MARKER, RECEIVED_PATH, RECORDS_PATH
from bench.client import Account, MatrixClient, new_session
from bench.run import RESULTS_DIR, log, measure_each, publish, run_bounded
from bench.servers import (
    BENCH_DIR,
    PeyvandServer,
    Server,
    SynapseServer,
    ensure_synapse,
    free_port,
)
from bench.workloads import Clock, bounded_map, percentile

SETUP_BCRYPT_ROUNDS = 4
STOP_RESERVE_SECONDS = 15.0
RECEIVER_START_SECONDS = 30.0
POLL_SECONDS = 0.2
APPSERVICE_ID = "peyvand-bench"
BOT_LOCALPART = "bench_bot"
CpuProbe = Callable[[], float]
_REQUEST_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


@dataclass(frozen=True, slots=True)
class AppServiceSizes:
    senders: int = 50
    rate: float = 1000.0
    warm_up_seconds: float = 3.0
    measure_seconds: float = 20.0
    drain_seconds: float = 30.0
    setup_concurrency: int = 8
    setup_seconds: float = 120.0
    settle_seconds: float = 2.0
    server_budget_seconds: float = 240.0


FULL = AppServiceSizes()
SMOKE = AppServiceSizes(
    senders=4, rate=40.0, warm_up_seconds=0.5, measure_seconds=2.0, drain_seconds=15.0,
    setup_seconds=60.0, settle_seconds=0.2, server_budget_seconds=120.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AppServiceLink:
    """What the bench and the server share about the appservice."""

    receiver_url: str
    as_token: str
    hs_token: str


@dataclass(frozen=True, slots=True)
class Sent:
    """One send: ``time.monotonic()`` at its start and when its reply was read."""

    started: float
    answered: float
    event_id: str | None


@dataclass(slots=True)
class AppServiceFigures:
    """One server's run; latencies in ms."""

    name: str = ""
    version: str = ""
    senders: int = 0
    truncated: bool = False
    setup_seconds: float = math.nan
    window_seconds: float = math.nan
    sent: int = 0
    send_errors: int = 0
    achieved_rate: float = math.nan
    send_p50_ms: float = math.nan
    send_p99_ms: float = math.nan
    received: int = 0
    missing: int = 0
    repeats: int = 0
    from_answer_p50_ms: float = math.nan
    from_answer_p99_ms: float = math.nan
    from_answer_max_ms: float = math.nan
    from_start_p50_ms: float = math.nan
    from_start_p99_ms: float = math.nan
    transactions: int = 0
    events_per_transaction_mean: float = math.nan
    events_per_transaction_max: float = math.nan
    drain_seconds: float = math.nan
    cpu_seconds: float = math.nan
    bench_cpu_seconds: float = math.nan

    @property
    def cpu_seconds_per_1000_messages(self) -> float:
        if self.sent == 0:
            return math.nan
        return self.cpu_seconds / self.sent * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.appservice", description=__doc__)
    parser.add_argument("--rate", type=float, help="messages a second, all senders together")
    parser.add_argument("--senders", type=int, help="users sending (one send in flight each)")
    parser.add_argument("--seconds", type=float, help="the measured window")
    parser.add_argument("--postgres", action="store_true", help="both on one PostgreSQL cluster")
    parser.add_argument("--only", choices=["peyvand", "synapse"], help="run one server only")
    parser.add_argument("--smoke", action="store_true", help="4 senders, 40 a second, 2 s")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if args.rate is not None:
        if not 0 < args.rate <= 10_000:
            parser.error("--rate: more than 0, at most 10,000")
        sizes = dataclasses.replace(sizes, rate=args.rate)
    if args.senders is not None:
        if not 1 <= args.senders <= 500:
            parser.error("--senders: 1 to 500")
        sizes = dataclasses.replace(sizes, senders=args.senders)
    if args.seconds is not None:
        if not 1 <= args.seconds <= 120:
            parser.error("--seconds: 1 to 120")
        sizes = dataclasses.replace(sizes, measure_seconds=args.seconds)
    names = [args.only] if args.only else ["peyvand", "synapse"]
    if "synapse" in names:
        ensure_synapse()
    started = time.monotonic()
    results = measure_each(
        names,
        args.postgres,
        sizes.server_budget_seconds,
        lambda name, url: _measure(name, url, sizes),
    )
    publish(
        args.out,
        "appservice",
        benchmark="appservice transactions",
        database="postgres" if args.postgres else "sqlite",
        sizes=asdict(sizes),
        servers={name: _to_json(figures) for name, figures in results.items()},
        summary=summarize(results.get("peyvand"), results.get("synapse"), sizes),
        started=started,
    )
    return 0


def write_registration(path: Path, link: AppServiceLink) -> Path:
    """The appservice's registration file (JSON, which is YAML), as both servers read it."""
    registration = {
        "id": APPSERVICE_ID,
        "url": link.receiver_url,
        "as_token": link.as_token,
        "hs_token": link.hs_token,
        "sender_localpart": BOT_LOCALPART,
        "namespaces": {
            "users": [{"exclusive": True, "regex": "@bench_ghost_.*:.*"}],
            "aliases": [],
            "rooms": [],
        },
        "rate_limited": False,
    }
    path.write_text(json.dumps(registration, indent=2), encoding="utf-8")
    return path


class ReceiverProcess:
    """``python -m bench.appservice_receiver`` on a free port, stopped by ``stop``."""

    def __init__(self, hs_token: str, max_seconds: float) -> None:
        self.hs_token = hs_token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._command = [
            sys.executable, "-m", "bench.appservice_receiver", "--port", str(self.port),
            "--hs-token", hs_token, "--max-seconds", str(max_seconds),
        ]  # fmt: skip
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait (bounded) until it answers."""
        self._process = subprocess.Popen(
            self._command, cwd=BENCH_DIR.parent, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + RECEIVER_START_SECONDS
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"the receiver exited ({self._process.returncode})")
            try:
                with urllib.request.urlopen(self.url + RECEIVED_PATH, timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the receiver did not answer on {self.url}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None


def _new_server(name: str, data_dir: Path, database_url: str | None, registration: Path) -> Server:
    """A server with the bench's appservice registered and cheap password hashing."""
    if name == "synapse":
        extra = {
            "bcrypt_rounds": SETUP_BCRYPT_ROUNDS,
            "app_service_config_files": [str(registration)],
        }
        return SynapseServer(data_dir, database_url, extra)
    server = PeyvandServer(data_dir, database_url, SETUP_BCRYPT_ROUNDS)
    text = server.config_path.read_text(encoding="utf-8")
    text, count = re.subn(
        r"^app_service_config_files = \[\]$",
        f"app_service_config_files = [{json.dumps(str(registration))}]",
        text,
        flags=re.M,
    )
    if count != 1:
        raise RuntimeError("the generated config has no app_service_config_files line")
    server.config_path.write_text(text, encoding="utf-8")
    return server


def _measure(name: str, database_url: str | None, sizes: AppServiceSizes) -> AppServiceFigures:
    """One server with a receiver of its own, fresh; everything removed afterwards."""
    stop_by = time.perf_counter() + sizes.server_budget_seconds
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-appservice-{name}-"))
    receiver = ReceiverProcess(secrets.token_hex(16), sizes.server_budget_seconds + 60)
    link = AppServiceLink(receiver.url, secrets.token_hex(16), receiver.hs_token)
    server: Server | None = None
    try:
        registration = write_registration(data_dir / "appservice.yaml", link)
        receiver.start()
        server = _new_server(name, data_dir, database_url, registration)
        server.start()
        pid = server.pid
        clock = Clock(stop_by - STOP_RESERVE_SECONDS)
        figures = run_bounded(
            run_appservice(
                server.base_url, link, lambda: procstat.tree_cpu_seconds(pid), sizes, clock
            ),
            clock,
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
        receiver.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


async def run_appservice(
    base_url: str, link: AppServiceLink, cpu: CpuProbe, sizes: AppServiceSizes, clock: Clock
) -> AppServiceFigures:
    """Set up the room against ``base_url``, send steadily, wait for the appservice to have
    every message, and compute the figures from what both sides recorded."""
    figures = AppServiceFigures()
    async with new_session() as session:
        client = MatrixClient(session, base_url)
        mark = time.perf_counter()
        senders, room_id = await _set_up(client, link, sizes, clock)
        figures.setup_seconds = round(time.perf_counter() - mark, 1)
        figures.senders = len(senders)
        figures.truncated = len(senders) < sizes.senders
        log(f"  set-up: {len(senders)} senders in {figures.setup_seconds} s")
        await asyncio.sleep(sizes.settle_seconds)
        window, sends, before = await _send_steadily(
            client, senders, room_id, lambda: _bench_cpu(session, link), cpu, sizes, clock
        )
        drain_started = time.monotonic()
        answered = sum(1 for sent in sends if sent.event_id is not None)
        await _wait_received(session, link.receiver_url, answered, clock.after(sizes.drain_seconds))
        figures.drain_seconds = time.monotonic() - drain_started
        figures.cpu_seconds = cpu() - before[0]
        figures.bench_cpu_seconds = await _bench_cpu(session, link) - before[1]
        records = await _get_json(session, link.receiver_url + RECORDS_PATH)
    measured = [sent for sent in sends if window[0] <= sent.started < window[1]]
    compute(figures, measured, records, window[1] - window[0])
    log(
        f"  {figures.achieved_rate:.0f} msg/s sent; from the 200 p50"
        f" {figures.from_answer_p50_ms:.1f} ms, p99 {figures.from_answer_p99_ms:.1f} ms;"
        f" {figures.events_per_transaction_mean:.1f} events per transaction;"
        f" {figures.missing} missing; CPU: server {figures.cpu_seconds:.1f} s,"
        f" bench (senders and appservice) {figures.bench_cpu_seconds:.1f} s"
    )
    return figures


async def _set_up(
    client: MatrixClient, link: AppServiceLink, sizes: AppServiceSizes, clock: Clock
) -> tuple[list[Account], str]:
    """A public room, the appservice's bot in it (joined with the ``as_token``), and the
    senders who joined it within the set-up bound."""
    prefix = f"as{uuid.uuid4().hex[:6]}"
    owner = await client.register(f"{prefix}-owner")
    room_id = await client.create_room(owner)
    reply = await client.request("POST", f"join/{quote(room_id)}", {}, link.as_token)
    if reply.status != 200:
        raise RuntimeError(f"the appservice's bot could not join: {reply.status} {reply.body}")

    async def sender(index: int) -> Account:
        account = await client.register(f"{prefix}-{index}")
        await client.join(account, room_id)
        return account

    deadline = clock.after(sizes.setup_seconds)
    senders = await bounded_map(range(sizes.senders), sender, sizes.setup_concurrency, deadline)
    return senders, room_id


async def _send_steadily(
    client: MatrixClient,
    senders: list[Account],
    room_id: str,
    bench_cpu: Callable[[], Awaitable[float]],
    cpu: CpuProbe,
    sizes: AppServiceSizes,
    clock: Clock,
) -> tuple[tuple[float, float], list[Sent], tuple[float, float]]:
    """Every sender's loop over its slots; the measured window (``time.monotonic()``), every
    send, and the CPU of the server and of the bench at the window's start."""
    count = len(senders)
    start = time.monotonic() + 0.1
    window = (start + sizes.warm_up_seconds, start + sizes.warm_up_seconds + sizes.measure_seconds)
    per_sender = math.ceil(sizes.rate * (sizes.warm_up_seconds + sizes.measure_seconds) / count)
    sends: list[Sent] = []

    async def loop(index: int) -> None:
        for turn in range(per_sender):
            number = turn * count + index
            slot = start + number / sizes.rate
            if slot >= window[1] or time.perf_counter() > clock.stop_by:
                return
            wait = slot - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if time.monotonic() >= window[1]:
                return
            sends.append(await _send(client, senders[index], room_id, number))

    async def cpu_at_window_start() -> tuple[float, float]:
        await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
        return cpu(), await bench_cpu()

    async with asyncio.TaskGroup() as group:
        cpu_task = group.create_task(cpu_at_window_start())
        for index in range(count):
            group.create_task(loop(index))
    return window, sends, cpu_task.result()


async def _bench_cpu(session: aiohttp.ClientSession, link: AppServiceLink) -> float:
    """The CPU seconds of this process and of the receiver: what the bench itself takes of
    the machine's cores while the server is measured (the server, a child of this process,
    not counted)."""
    body = await _get_json(session, link.receiver_url + RECEIVED_PATH)
    return time.process_time() + float(body["cpu_seconds"])


async def _send(client: MatrixClient, account: Account, room_id: str, number: int) -> Sent:
    """One message whose body carries its number and the moment its send started."""
    started = time.monotonic()
    try:
        reply = await client.send(
            account, room_id, f"as{number}", f"{MARKER} {number} {started:.6f}"
        )
    except _REQUEST_ERRORS:
        return Sent(started, time.monotonic(), None)
    answered = time.monotonic()
    ok = reply.status == 200 and isinstance(reply.body, dict)
    return Sent(started, answered, reply.body.get("event_id") if ok else None)


async def _wait_received(
    session: aiohttp.ClientSession, receiver_url: str, expected: int, deadline: float
) -> None:
    """Until the receiver has ``expected`` marked messages, or ``deadline`` (perf_counter)."""
    while time.perf_counter() < deadline:
        body = await _get_json(session, receiver_url + RECEIVED_PATH)
        if body["received"] >= expected:
            return
        await asyncio.sleep(POLL_SECONDS)


async def _get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=60)) as response:
        response.raise_for_status()
        return await response.json()


def compute(
    figures: AppServiceFigures, measured: list[Sent], records: Any, window_seconds: float
) -> None:
    """The figures from the measured sends and what the receiver recorded."""
    answered = [sent for sent in measured if sent.event_id is not None]
    figures.window_seconds = window_seconds
    figures.sent = len(answered)
    figures.send_errors = len(measured) - len(answered)
    figures.achieved_rate = len(answered) / window_seconds
    send_ms = [(sent.answered - sent.started) * 1000 for sent in answered]
    figures.send_p50_ms = percentile(send_ms, 50)
    figures.send_p99_ms = percentile(send_ms, 99)
    arrivals: dict[str, list[float]] = records["arrivals"]
    transactions: list[list[float]] = records["transactions"]
    from_answer: list[float] = []
    from_start: list[float] = []
    carrying: set[int] = set()
    for sent in answered:
        arrival = arrivals.get(sent.event_id or "")
        if arrival is None:
            continue
        from_answer.append((arrival[0] - sent.answered) * 1000)
        from_start.append((arrival[0] - sent.started) * 1000)
        carrying.add(int(arrival[1]))
    figures.received = len(from_answer)
    figures.missing = figures.sent - figures.received
    figures.repeats = int(records["repeats"])
    figures.from_answer_p50_ms = percentile(from_answer, 50)
    figures.from_answer_p99_ms = percentile(from_answer, 99)
    figures.from_answer_max_ms = max(from_answer, default=math.nan)
    figures.from_start_p50_ms = percentile(from_start, 50)
    figures.from_start_p99_ms = percentile(from_start, 99)
    counts = [transactions[position][1] for position in carrying]
    figures.transactions = len(counts)
    if counts:
        figures.events_per_transaction_mean = sum(counts) / len(counts)
        figures.events_per_transaction_max = max(counts)


def summarize(
    peyvand: AppServiceFigures | None, synapse: AppServiceFigures | None, sizes: AppServiceSizes
) -> dict[str, Any]:
    """The rows of the side-by-side table (no targets: the issue sets none). Rows that are
    neither better nor worse when higher (the offered rate, the batching) get no ratio."""

    def row(
        key: str,
        label: str,
        unit: str,
        higher_is_better: bool | None,
        value: Callable[[AppServiceFigures], float],
    ) -> dict[str, Any]:
        line = report.row(
            key,
            label,
            unit,
            bool(higher_is_better),
            float(value(peyvand)) if peyvand else math.nan,
            float(value(synapse)) if synapse else math.nan,
        )
        if higher_is_better is None:
            line["ratio"] = math.nan
        return line

    rows = [
        row("offered", f"offered send rate ({sizes.senders} senders)", "msg/s", None,
            lambda f: sizes.rate),
        row("achieved", "achieved send rate", "msg/s", True, lambda f: f.achieved_rate),
        row("send_p50", "PUT /send latency p50", "ms", False, lambda f: f.send_p50_ms),
        row("send_p99", "PUT /send latency p99", "ms", False, lambda f: f.send_p99_ms),
        row("answer_p50", "PUT's 200 -> appservice, p50", "ms", False,
            lambda f: f.from_answer_p50_ms),
        row("answer_p99", "PUT's 200 -> appservice, p99", "ms", False,
            lambda f: f.from_answer_p99_ms),
        row("start_p50", "PUT's start -> appservice, p50", "ms", False,
            lambda f: f.from_start_p50_ms),
        row("start_p99", "PUT's start -> appservice, p99", "ms", False,
            lambda f: f.from_start_p99_ms),
        row("per_txn_mean", "events per transaction, mean", "count", None,
            lambda f: f.events_per_transaction_mean),
        row("per_txn_max", "events per transaction, max", "count", None,
            lambda f: f.events_per_transaction_max),
        row("transactions", "transactions", "count", None, lambda f: f.transactions),
        row("missing", "messages missing at the appservice", "count", False,
            lambda f: f.missing),
        row("repeats", "transactions repeated", "count", False, lambda f: f.repeats),
        row("send_errors", "send errors", "count", False, lambda f: f.send_errors),
        row("cpu", "server CPU per 1,000 messages", "s", False,
            lambda f: f.cpu_seconds_per_1000_messages),
        row("server_cpu", "server CPU, window start to drain end", "s", False,
            lambda f: f.cpu_seconds),
        row("bench_cpu", "bench CPU (senders, appservice), same span", "s", None,
            lambda f: f.bench_cpu_seconds),
    ]  # fmt: skip
    return report.summarize(rows, [])


def _to_json(figures: AppServiceFigures) -> dict[str, Any]:
    return {
        **asdict(figures),
        "cpu_seconds_per_1000_messages": figures.cpu_seconds_per_1000_messages,
    }


if __name__ == "__main__":
    raise SystemExit(main())
