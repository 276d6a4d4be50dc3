"""``python -m bench.purge [--events N] [--postgres] [--smoke]``: is Peyvand responsive
while retention purges a big room? (issue 7 item 1: "bounded batches").

1. A fresh Peyvand (``bench.servers.PeyvandServer``; SQLite, or with ``--postgres`` a new
   database on a throwaway cluster, as ``python -m bench`` makes them). A server admin is
   made with ``peyvand register-user --admin``; a filler and a probe user register.
2. The filler creates a room whose ``m.room.retention`` sets ``max_lifetime`` to one day
   and fills it with N messages (default 100,000), ``--concurrency`` sends in flight
   (default 32), each with its own transaction ID: the fill rate.
3. The probe, in a room of its own, loops every 50 ms: PUT a message, an incremental
   /sync with ``timeout=0``, GET the room's state; each request's latency is kept. It
   runs a baseline of a few seconds, then on through the purge.
4. ``POST /_peyvand/admin/v1/retention/run`` for the big room with ``now_ts`` two days
   ahead (every message has expired; current state stays), timed; the server tree's
   RSS is sampled every 100 ms all along (``bench.procstat``).
5. Checked after the purge: ``/messages`` of the big room, paged back to its start, holds
   no message, sampled event IDs answer 404, and the purge reported at least as many
   events as were sent. Any failure there, or any probe request that failed, exits 1.

Prints two Markdown tables (the figures; the probe by request kind) and writes the same
figures to ``bench/results/purge-<timestamp>-<database>.json``. Everything is bounded:
``--budget`` seconds overall (default 900) with per-phase limits inside it (setup, the
fill's share, the purge, the checks); loopback only. ``--batch-size`` overrides
``[retention] purge_batch_size`` (default: the server's own default, 500).

With ``--postgres`` the PostgreSQL server's own memory is not in the RSS figures (only
Peyvand's process tree is sampled), and the throwaway cluster runs with ``fsync=off``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp

from bench import procstat, report
from bench.client import Account, MatrixClient, Reply, new_session
from bench.run import RESULTS_DIR, _databases, _git, _loop_factory, machine
from bench.servers import PeyvandServer
from bench.workloads import percentile

T = TypeVar("T")

DAY_MS = 24 * 3600 * 1000
ADMIN_V1 = "/_peyvand/admin/v1"
ADMIN_PASSWORD = "bench admin password, not a secret"
PROBE_KINDS = ("send", "sync", "state")
_REQUEST_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)
MAX_FILL_ERRORS = 100
MESSAGES_PAGE = 1000
MAX_MESSAGES_PAGES = 50
SAMPLED_EVENT_IDS = 20
# Kept back from the budget for the checks after the purge and for stopping the server.
RESERVE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Sizes:
    events: int = 100_000
    concurrency: int = 32
    probe_interval: float = 0.05
    baseline_seconds: float = 5.0
    setup_seconds: float = 120.0
    # The fill may use at most this share of the budget left after setup.
    fill_share: float = 0.6
    budget_seconds: float = 900.0


FULL = Sizes()
SMOKE = Sizes(events=3000, baseline_seconds=2.0, setup_seconds=60.0, budget_seconds=300.0)


class PurgeBenchError(RuntimeError):
    """A setup step failed, or a check after the purge did not hold."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- figures --------------------------------------------------------------------------------


@dataclass(slots=True)
class ProbeSample:
    started: float  # time.perf_counter() when the request was sent
    kind: str
    seconds: float
    ok: bool


@dataclass(slots=True)
class LatencyFigures:
    requests: int = 0
    failed: int = 0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan


def latency_figures(samples: list[ProbeSample]) -> LatencyFigures:
    seconds = [s.seconds for s in samples if s.ok]
    return LatencyFigures(
        requests=len(samples),
        failed=sum(1 for s in samples if not s.ok),
        p50_ms=percentile(seconds, 50) * 1000,
        p99_ms=percentile(seconds, 99) * 1000,
        max_ms=max(seconds) * 1000 if seconds else math.nan,
    )


@dataclass(slots=True)
class Figures:
    database: str
    events_requested: int
    events_sent: int = 0
    fill_errors: int = 0
    fill_truncated: bool = False
    fill_seconds: float = math.nan
    fill_rate: float = math.nan
    purge_batch_size: int | None = None
    purge_seconds: float = math.nan
    purge_reply: Any = None
    events_purged: int = 0
    purge_rate: float = math.nan
    purge_server_cpu_seconds: float = math.nan
    baseline: LatencyFigures = field(default_factory=LatencyFigures)
    during: LatencyFigures = field(default_factory=LatencyFigures)
    by_kind: dict[str, dict[str, LatencyFigures]] = field(default_factory=dict)
    # Longest time between two consecutive probe replies of any kind during the purge.
    during_longest_gap_ms: float = math.nan
    probe_failed_total: int = 0
    rss_idle_bytes: int = 0
    rss_before_purge_bytes: int = 0
    rss_peak_purge_bytes: int = 0
    rss_peak_bytes: int = 0
    sqlite_bytes_before: int | None = None
    sqlite_bytes_after: int | None = None
    messages_before: int = 0
    messages_after: int = -1
    messages_pages_after: int = 0
    messages_complete: bool = False
    sampled_events_gone: int = 0
    sampled_events: int = 0
    checks: dict[str, bool] = field(default_factory=dict)
    phase_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(self.checks.values())


# -- the run --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.purge", description=__doc__)
    parser.add_argument("--events", type=int, help="messages in the big room (default 100000)")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--smoke", action="store_true", help="a few thousand events: the setup")
    parser.add_argument("--budget", type=float, help="seconds for the whole run (default 900)")
    parser.add_argument("--concurrency", type=int, help="sends in flight during the fill (32)")
    parser.add_argument("--batch-size", type=int, help="[retention] purge_batch_size")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    overrides: dict[str, Any] = {}
    if args.events is not None:
        overrides["events"] = args.events
    if args.budget is not None:
        overrides["budget_seconds"] = args.budget
    if args.concurrency is not None:
        overrides["concurrency"] = args.concurrency
    if overrides:
        sizes = Sizes(**{**asdict(sizes), **overrides})
    if sizes.events < 1 or sizes.concurrency < 1 or sizes.budget_seconds <= RESERVE_SECONDS:
        parser.error("--events and --concurrency must be positive, --budget above 60")
    started = time.monotonic()
    database = "postgres" if args.postgres else "sqlite"
    with _databases(args.postgres) as new_database:
        figures = _measure(new_database(), database, sizes, args.batch_size)
    document = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "benchmark": "retention purge",
        "database": database,
        "sizes": asdict(sizes),
        "machine": machine(),
        "commit": _git("rev-parse", "HEAD"),
        "figures": asdict(figures),
        "passed": figures.passed,
        "seconds": round(time.monotonic() - started, 1),
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"purge-{stamp}-{database}.json"
    report.write_json(path, document)
    print(table(figures))
    print(f"\n{database}, {document['seconds']} s; JSON: {path}")
    if not figures.passed:
        failed = ", ".join(name for name, ok in figures.checks.items() if not ok)
        print(f"FAILED: {failed or 'no checks ran'}")
        return 1
    return 0


def _measure(
    database_url: str | None, database: str, sizes: Sizes, batch_size: int | None
) -> Figures:
    stop_by = time.perf_counter() + sizes.budget_seconds
    data_dir = Path(tempfile.mkdtemp(prefix="bench-purge-"))
    server = PeyvandServer(data_dir, database_url)
    if batch_size is not None:
        _set_batch_size(server.config_path, batch_size)
    figures = Figures(database, sizes.events, purge_batch_size=batch_size)
    log(f"==> peyvand ({database}), {sizes.events:,} events, budget {sizes.budget_seconds:.0f} s")
    try:
        admin = _register_admin(server.config_path)
        server.start()
        sampler = procstat.Sampler(server.pid)
        sampler.start()
        try:
            time.sleep(1.0)
            figures.rss_idle_bytes = procstat.tree_rss_bytes(server.pid)
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(
                    asyncio.wait_for(
                        _run(server, data_dir, admin, sizes, stop_by, figures),
                        max(1.0, stop_by - time.perf_counter() - 30.0),
                    )
                )
        finally:
            sampler.stop()
            figures.rss_peak_bytes = sampler.peak_bytes
    except BaseException:
        log(f"  peyvand failed; the last lines of its log:\n{server.tail()}")
        raise
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return figures


def _set_batch_size(config_path: Path, batch_size: int) -> None:
    text = config_path.read_text()
    line = "purge_batch_size = 500"
    if line not in text:
        raise PurgeBenchError(f"no '{line}' in the generated config to replace")
    config_path.write_text(text.replace(line, f"purge_batch_size = {batch_size}"))


def _register_admin(config_path: Path) -> str:
    localpart = f"admin{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [sys.executable, "-m", "peyvand", "register-user", "--config", str(config_path),
         "--user", localpart, "--password", ADMIN_PASSWORD, "--admin"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise PurgeBenchError(f"register-user failed:\n{result.stdout}{result.stderr}")
    return localpart


class Phases:
    def __init__(self, figures: Figures) -> None:
        self._figures = figures
        self._mark = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self._figures.phase_seconds[name] = round(now - self._mark, 2)
        log(f"  {name}: {now - self._mark:.1f} s")
        self._mark = now


async def _run(
    server: PeyvandServer,
    data_dir: Path,
    admin_localpart: str,
    sizes: Sizes,
    stop_by: float,
    figures: Figures,
) -> None:
    phases = Phases(figures)
    prefix = f"purge{uuid.uuid4().hex[:6]}"
    async with new_session() as session:
        client = MatrixClient(session, server.base_url)
        setup = _limit(sizes.setup_seconds, stop_by)
        admin = await _within(_login(client, admin_localpart), setup, "admin login")
        filler = await _within(client.register(f"{prefix}-filler"), setup, "register")
        prober = await _within(client.register(f"{prefix}-probe"), setup, "register")
        big_room = await _within(_create_retention_room(client, filler), setup, "createRoom")
        policy = await _admin_get(session, server, admin, f"rooms/{quote(big_room)}/retention")
        if policy.get("max_lifetime") != DAY_MS:
            raise PurgeBenchError(f"the room's retention policy is {policy}, not one day")
        probe_room = await _within(client.create_room(prober), setup, "createRoom")
        phases.done("setup")

        fill_for = (stop_by - time.perf_counter() - RESERVE_SECONDS) * sizes.fill_share
        sampled = await _fill(client, filler, big_room, sizes, fill_for, figures)
        phases.done("fill")
        if figures.events_sent == 0:
            raise PurgeBenchError("the fill sent no message")
        figures.messages_before = (await _messages_in_room(client, filler, big_room, 1))[0]
        gone_before = await _events_gone(client, filler, big_room, sampled)
        if figures.messages_before == 0 or gone_before:
            raise PurgeBenchError(
                f"before the purge /messages shows {figures.messages_before} messages and "
                f"{gone_before} of {len(sampled)} sampled events are missing"
            )
        figures.sqlite_bytes_before = _sqlite_bytes(data_dir, figures.database)

        probe = Probe(client, prober, probe_room, sizes.probe_interval)
        await probe.prepare()
        probe_task = asyncio.create_task(probe.run(stop_by - RESERVE_SECONDS / 2))
        try:
            await asyncio.sleep(sizes.baseline_seconds)
            figures.rss_before_purge_bytes = procstat.tree_rss_bytes(server.pid)
            purge_sampler = procstat.Sampler(server.pid)
            purge_sampler.start()
            cpu_before = procstat.tree_cpu_seconds(server.pid)
            purge_started = time.perf_counter()
            log("  purging ...")
            try:
                reply = await _purge(session, server, admin, big_room, stop_by - RESERVE_SECONDS)
            finally:
                purge_ended = time.perf_counter()
                purge_sampler.stop()
            figures.purge_server_cpu_seconds = procstat.tree_cpu_seconds(server.pid) - cpu_before
            figures.rss_peak_purge_bytes = purge_sampler.peak_bytes
            # A moment of probing after the purge: requests sent during it finish.
            await asyncio.sleep(min(1.0, sizes.baseline_seconds))
        finally:
            probe.stop()
            await probe_task
        phases.done("baseline, purge")
        figures.purge_seconds = purge_ended - purge_started
        figures.purge_reply = reply
        figures.events_purged = int(reply.get("purged", {}).get("events", 0))
        figures.purge_rate = figures.events_purged / figures.purge_seconds
        _probe_figures(
            figures, probe, purge_started - sizes.baseline_seconds, purge_started, purge_ended
        )

        figures.sqlite_bytes_after = _sqlite_bytes(data_dir, figures.database)
        check_by = _limit(RESERVE_SECONDS / 2, stop_by)
        count, pages, complete = await _within(
            _messages_in_room(client, filler, big_room, MAX_MESSAGES_PAGES), check_by, "/messages"
        )
        figures.messages_after, figures.messages_pages_after = count, pages
        figures.messages_complete = complete
        figures.sampled_events = len(sampled)
        figures.sampled_events_gone = await _within(
            _events_gone(client, filler, big_room, sampled), check_by, "GET /event"
        )
        phases.done("checks")
    figures.checks = {
        "fill: no send failed": figures.fill_errors == 0,
        "purge: every sent message purged": figures.events_purged >= figures.events_sent,
        "/messages: no message left, paged to the room's start": (
            figures.messages_after == 0 and figures.messages_complete
        ),
        "sampled event IDs: all 404": figures.sampled_events_gone == figures.sampled_events,
        "probe: no request failed": figures.probe_failed_total == 0,
        "probe: requests made during the purge": figures.during.requests > 0,
    }


def _limit(seconds: float, stop_by: float) -> float:
    return min(time.perf_counter() + seconds, stop_by)


async def _within(work: Awaitable[T], deadline: float, what: str) -> T:
    try:
        return await asyncio.wait_for(work, max(0.1, deadline - time.perf_counter()))
    except TimeoutError as exc:
        raise PurgeBenchError(f"{what} did not finish within its time limit") from exc


def _ok(reply: Reply, what: str) -> Any:
    if reply.status != 200:
        raise PurgeBenchError(f"{what} answered {reply.status}: {reply.body}")
    return reply.body


async def _login(client: MatrixClient, localpart: str) -> Account:
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": localpart},
        "password": ADMIN_PASSWORD,
    }
    result = _ok(await client.request("POST", "login", body), "login")
    return Account(result["user_id"], result["access_token"])


async def _create_retention_room(client: MatrixClient, owner: Account) -> str:
    body = {
        "preset": "private_chat",
        "initial_state": [
            {"type": "m.room.retention", "state_key": "", "content": {"max_lifetime": DAY_MS}}
        ],
    }
    reply = await client.request("POST", "createRoom", body, owner.access_token)
    room_id: str = _ok(reply, "createRoom")["room_id"]
    return room_id


async def _admin_get(
    session: aiohttp.ClientSession, server: PeyvandServer, admin: Account, path: str
) -> Any:
    async with session.get(
        f"{server.base_url}{ADMIN_V1}/{path}",
        headers={"Authorization": f"Bearer {admin.access_token}"},
        timeout=aiohttp.ClientTimeout(total=60),
    ) as response:
        body = await response.json(content_type=None)
        if response.status != 200:
            raise PurgeBenchError(f"GET {path} answered {response.status}: {body}")
        return body


async def _purge(
    session: aiohttp.ClientSession,
    server: PeyvandServer,
    admin: Account,
    room_id: str,
    deadline: float,
) -> Any:
    """The admin API's retention run for ``room_id``, as of two days from now."""
    now_ts = int(time.time() * 1000) + 2 * DAY_MS
    timeout = max(1.0, deadline - time.perf_counter())
    try:
        async with session.post(
            f"{server.base_url}{ADMIN_V1}/retention/run",
            json={"room_id": room_id, "now_ts": now_ts, "reason": "bench.purge"},
            headers={"Authorization": f"Bearer {admin.access_token}"},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            body = await response.json(content_type=None)
            if response.status != 200:
                raise PurgeBenchError(f"retention/run answered {response.status}: {body}")
            return body
    except TimeoutError as exc:
        raise PurgeBenchError(f"the purge did not finish within {timeout:.0f} s") from exc


async def _fill(
    client: MatrixClient,
    sender: Account,
    room_id: str,
    sizes: Sizes,
    seconds: float,
    figures: Figures,
) -> list[str]:
    """Send ``sizes.events`` messages, ``sizes.concurrency`` at a time, for at most
    ``seconds``; answers a spread-out sample of the sent events' IDs."""
    deadline = time.perf_counter() + seconds
    every = max(1, sizes.events // SAMPLED_EVENT_IDS)
    sampled: list[str] = []
    next_index = 0
    started = time.perf_counter()
    log(f"  filling: {sizes.events:,} messages, {sizes.concurrency} in flight, <= {seconds:.0f} s")

    async def worker() -> None:
        nonlocal next_index
        while next_index < sizes.events:
            if time.perf_counter() > deadline:
                figures.fill_truncated = True
                return
            if figures.fill_errors >= MAX_FILL_ERRORS:
                return
            n = next_index
            next_index += 1
            try:
                reply = await client.send(sender, room_id, f"fill{n}", f"message {n}")
            except _REQUEST_ERRORS:
                figures.fill_errors += 1
                continue
            if reply.status != 200:
                figures.fill_errors += 1
                continue
            figures.events_sent += 1
            if n % every == 0 or n == sizes.events - 1:
                sampled.append(str(reply.body["event_id"]))

    async def progress() -> None:
        while True:
            await asyncio.sleep(15)
            elapsed = time.perf_counter() - started
            log(
                f"    {figures.events_sent:,} sent in {elapsed:.0f} s "
                f"({figures.events_sent / elapsed:,.0f}/s), {figures.fill_errors} errors"
            )

    reporter = asyncio.create_task(progress())
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(sizes.concurrency):
                group.create_task(worker())
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    figures.fill_seconds = time.perf_counter() - started
    figures.fill_rate = figures.events_sent / figures.fill_seconds
    if figures.fill_errors >= MAX_FILL_ERRORS:
        raise PurgeBenchError(f"{figures.fill_errors} sends failed during the fill")
    return sampled


class Probe:
    """Another user in another room: send, incremental /sync (timeout 0), GET state,
    every ``interval`` seconds, each request timed."""

    def __init__(self, client: MatrixClient, account: Account, room_id: str, interval: float):
        self._client = client
        self._account = account
        self._room_id = room_id
        self._interval = interval
        self._since = ""
        self._stop = asyncio.Event()
        self.samples: list[ProbeSample] = []

    async def prepare(self) -> None:
        sync_filter = {"room": {"timeline": {"limit": 1}}}
        reply = await self._client.sync(self._account, sync_filter=sync_filter)
        self._since = str(_ok(reply, "initial /sync")["next_batch"])

    def stop(self) -> None:
        self._stop.set()

    async def run(self, hard_stop: float) -> None:
        n = 0
        while not self._stop.is_set() and time.perf_counter() < hard_stop:
            began = time.perf_counter()
            n += 1
            await self._timed("send", self._send(n))
            await self._timed("sync", self._sync())
            await self._timed("state", self._state())
            pause = self._interval - (time.perf_counter() - began)
            if pause > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), pause)

    async def _timed(self, kind: str, request: Awaitable[bool]) -> None:
        started = time.perf_counter()
        try:
            ok = await request
        except _REQUEST_ERRORS:
            ok = False
        self.samples.append(ProbeSample(started, kind, time.perf_counter() - started, ok))

    async def _send(self, n: int) -> bool:
        reply = await self._client.send(self._account, self._room_id, f"probe{n}", f"probe {n}")
        return reply.status == 200

    async def _sync(self) -> bool:
        reply = await self._client.sync(self._account, self._since, 0)
        if reply.status != 200:
            return False
        self._since = str(reply.body["next_batch"])
        return True

    async def _state(self) -> bool:
        reply = await self._client.request(
            "GET", f"rooms/{quote(self._room_id)}/state", token=self._account.access_token
        )
        return reply.status == 200


def _probe_figures(
    figures: Figures, probe: Probe, baseline_from: float, purge_from: float, purge_to: float
) -> None:
    baseline = [s for s in probe.samples if baseline_from <= s.started < purge_from]
    during = [s for s in probe.samples if purge_from <= s.started < purge_to]
    figures.baseline = latency_figures(baseline)
    figures.during = latency_figures(during)
    figures.by_kind = {
        kind: {
            "baseline": latency_figures([s for s in baseline if s.kind == kind]),
            "during": latency_figures([s for s in during if s.kind == kind]),
        }
        for kind in PROBE_KINDS
    }
    figures.probe_failed_total = sum(1 for s in probe.samples if not s.ok)
    # The longest stretch of the purge with no probe reply coming back.
    ends = sorted(s.started + s.seconds for s in probe.samples)
    marks = [purge_from, *(e for e in ends if purge_from < e < purge_to), purge_to]
    figures.during_longest_gap_ms = max(b - a for a, b in itertools.pairwise(marks)) * 1000


async def _messages_in_room(
    client: MatrixClient, account: Account, room_id: str, max_pages: int
) -> tuple[int, int, bool]:
    """``m.room.message`` events ``/messages`` shows, paging back from the end:
    ``(count, pages, reached the room's start)``."""
    count, pages, token = 0, 0, None
    while pages < max_pages:
        params = {"dir": "b", "limit": str(MESSAGES_PAGE)}
        if token is not None:
            params["from"] = token
        reply = await client.request(
            "GET", f"rooms/{quote(room_id)}/messages", token=account.access_token, params=params
        )
        body = _ok(reply, "/messages")
        pages += 1
        chunk = body.get("chunk", [])
        count += sum(1 for event in chunk if event.get("type") == "m.room.message")
        token = body.get("end")
        if not chunk or token is None:
            return count, pages, True
    return count, pages, False


async def _events_gone(
    client: MatrixClient, account: Account, room_id: str, event_ids: list[str]
) -> int:
    """How many of ``event_ids`` GET /rooms/{roomId}/event/{eventId} answers 404 for."""
    gone = 0
    for event_id in event_ids:
        reply = await client.request(
            "GET", f"rooms/{quote(room_id)}/event/{quote(event_id)}", token=account.access_token
        )
        if reply.status == 404:
            gone += 1
        elif reply.status != 200:
            raise PurgeBenchError(f"GET /event answered {reply.status}: {reply.body}")
    return gone


def _sqlite_bytes(data_dir: Path, database: str) -> int | None:
    if database != "sqlite":
        return None
    return sum(path.stat().st_size for path in data_dir.glob("homeserver.db*"))


# -- the table ------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _mib(value: int | None) -> float | None:
    return None if value is None else value / report.MIB


def table(f: Figures) -> str:
    rows: list[tuple[str, str, float | int | None]] = [
        ("events sent into the room", "count", f.events_sent),
        ("fill send failures", "count", f.fill_errors),
        ("fill rate", "events/s", f.fill_rate),
        ("fill duration", "s", f.fill_seconds),
        ("purge batch size", "events", f.purge_batch_size or 500),
        ("events purged (admin API reply)", "count", f.events_purged),
        ("purge duration", "s", f.purge_seconds),
        ("purge rate", "events/s", f.purge_rate),
        ("server CPU during the purge", "s", f.purge_server_cpu_seconds),
        ("probe latency p50, before", "ms", f.baseline.p50_ms),
        ("probe latency p99, before", "ms", f.baseline.p99_ms),
        ("probe latency max, before", "ms", f.baseline.max_ms),
        ("probe latency p50, during purge", "ms", f.during.p50_ms),
        ("probe latency p99, during purge", "ms", f.during.p99_ms),
        ("probe latency max, during purge", "ms", f.during.max_ms),
        ("longest wait for any probe reply, during", "ms", f.during_longest_gap_ms),
        ("probe requests before / during", "count", None),
        ("probe requests failed (must be 0)", "count", f.probe_failed_total),
        ("server RSS idle", "MiB", _mib(f.rss_idle_bytes)),
        ("server RSS before the purge", "MiB", _mib(f.rss_before_purge_bytes)),
        ("server RSS peak during the purge", "MiB", _mib(f.rss_peak_purge_bytes)),
        ("server RSS peak, whole run", "MiB", _mib(f.rss_peak_bytes)),
        ("SQLite files before / after the purge", "MiB", None),
        ("/messages: messages before (1st page) / after", "count", None),
        ("sampled event IDs answering 404 after", "count", None),
    ]
    texts = {
        "probe requests before / during": f"{f.baseline.requests:,} / {f.during.requests:,}",
        "SQLite files before / after the purge": (
            f"{_fmt(_mib(f.sqlite_bytes_before))} / {_fmt(_mib(f.sqlite_bytes_after))}"
        ),
        "/messages: messages before (1st page) / after": (
            f"{f.messages_before:,} / {f.messages_after:,} "
            f"({f.messages_pages_after} pages, {'to the start' if f.messages_complete else 'CUT'})"
        ),
        "sampled event IDs answering 404 after": f"{f.sampled_events_gone} of {f.sampled_events}",
    }
    lines = [
        f"| retention purge, {f.database}, {f.events_requested:,} events | unit | value |",
        "| --- | --- | ---: |",
    ]
    for label, unit, value in rows:
        lines.append(f"| {label} | {unit} | {texts.get(label, _fmt(value))} |")
    lines += [
        "",
        "| probe request | requests before / during | p50 ms before / during "
        "| p99 ms before / during | max ms before / during | failed |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, both in f.by_kind.items():
        b, d = both["baseline"], both["during"]
        lines.append(
            f"| {kind} | {b.requests} / {d.requests} | {_fmt(b.p50_ms)} / {_fmt(d.p50_ms)} "
            f"| {_fmt(b.p99_ms)} / {_fmt(d.p99_ms)} | {_fmt(b.max_ms)} / {_fmt(d.max_ms)} "
            f"| {b.failed + d.failed} |"
        )
    lines += ["", "| check | result |", "| --- | --- |"]
    for name, ok in f.checks.items():
        lines.append(f"| {name} | {'PASS' if ok else 'FAIL'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
