"""``python -m bench.search [--postgres] [--only NAME] [--smoke] [--messages N]``:
server-side search (``POST /search``, issue 16), Peyvand and Synapse side by side.

Each server is started fresh (new data directory, or a new database on one throwaway
PostgreSQL cluster) and seeded the same way: ``senders`` users in ``rooms`` rooms, which
the searcher created, send ``messages`` messages (default 100,000) concurrently, many
rooms and senders at once, each a sentence of words drawn from a Zipf-like vocabulary
(English-looking and Persian words), so a search term's frequency ranges from about one
message in ten to one in thousands. Then the searcher runs the query mix one query at a
time (``order_by`` ``recent``, as Element asks, and ``rank``, ten results a page), and
the latency of each is kept: p50 and p99 per order. Seeding is not part of the query
figures; its throughput is reported beside them.

Every loop is bounded: seeding stops at ``seed_seconds`` (the messages sent so far are
reported, ``truncated``), the queries at ``query_seconds``, the whole server's run at
``SERVER_BUDGET_SECONDS``. The table goes to stdout, the figures to
``bench/results/search-<timestamp>-<db>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import report
from bench.client import Account, MatrixClient, new_session
from bench.run import RESULTS_DIR, log, measure_each, publish, run_bounded
from bench.servers import PeyvandServer, Server, SynapseServer, ensure_synapse
from bench.workloads import Clock, bounded_map, percentile

SERVER_BUDGET_SECONDS = 5400.0
SMOKE_BUDGET_SECONDS = 180.0
STOP_RESERVE_SECONDS = 15.0
SETUP_BCRYPT_ROUNDS = 4
SERVERS: dict[str, Callable[[Path, str | None], Server]] = {
    "peyvand": lambda data_dir, url: PeyvandServer(data_dir, url, SETUP_BCRYPT_ROUNDS),
    "synapse": lambda data_dir, url: SynapseServer(
        data_dir, url, {"bcrypt_rounds": SETUP_BCRYPT_ROUNDS}
    ),
}
# Persian words mixed into the vocabulary (the issue: non-Latin scripts must match).
PERSIAN = ("سلام", "کتاب", "دوست", "خانه", "شهر", "باران", "دریا", "پنجره", "آسمان", "قهوه")
WORDS_PER_MESSAGE = 8


@dataclass(frozen=True, slots=True)
class SearchSizes:
    messages: int
    rooms: int
    senders: int
    vocabulary: int
    send_concurrency: int
    setup_concurrency: int
    seed_seconds: float
    queries_per_order: int
    query_seconds: float


FULL = SearchSizes(
    messages=100_000,
    rooms=50,
    senders=100,
    vocabulary=5_000,
    send_concurrency=64,
    setup_concurrency=16,
    seed_seconds=4500.0,
    queries_per_order=200,
    query_seconds=300.0,
)
SMOKE = SearchSizes(
    messages=600,
    rooms=4,
    senders=6,
    vocabulary=200,
    send_concurrency=16,
    setup_concurrency=8,
    seed_seconds=60.0,
    queries_per_order=20,
    query_seconds=30.0,
)


@dataclass(slots=True)
class OrderFigures:
    queries: int = 0
    errors: int = 0
    # Queries that found nothing (every query term is in some message).
    empty: int = 0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    mean_results: float = math.nan


@dataclass(slots=True)
class SearchResult:
    name: str
    version: str
    requested: int = 0
    sent: int = 0
    send_errors: int = 0
    truncated: bool = False
    seed_seconds: float = math.nan
    messages_per_second: float = math.nan
    orders: dict[str, OrderFigures] = field(default_factory=dict)
    seconds: float = math.nan


def words(vocabulary: int) -> list[str]:
    """The vocabulary, most frequent first: English-looking words with Persian ones
    spread through it."""
    syllables = ("ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "zu", "pe", "dor", "ban")
    found: list[str] = []
    for index in itertools.count():
        if len(found) == vocabulary:
            return found
        if index % 20 == 5 and index // 20 < len(PERSIAN):
            found.append(PERSIAN[index // 20])
            continue
        a, b, c = index % 12, (index // 12) % 12, (index // 144) % 12
        found.append(syllables[a] + syllables[b] + syllables[c] + str(index // 1728 or ""))
    raise AssertionError("unreachable")


def sentence(rng: random.Random, vocabulary: list[str], weights: list[float]) -> str:
    return " ".join(rng.choices(vocabulary, weights, k=WORDS_PER_MESSAGE))


def query_terms(vocabulary: list[str]) -> list[str]:
    """The query mix: a very common word, a common one, a rare one, two words together,
    a Persian word."""
    n = len(vocabulary)
    persian = next(w for w in vocabulary if w in PERSIAN)
    return [
        vocabulary[0],
        vocabulary[n // 20],
        vocabulary[n // 2],
        f"{vocabulary[1]} {vocabulary[n // 10]}",
        persian,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__)
    parser.add_argument("--postgres", action="store_true", help="both on one PostgreSQL cluster")
    parser.add_argument("--only", choices=sorted(SERVERS), help="run one server only")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check the setup")
    parser.add_argument("--messages", type=int, help="messages to seed (default: 100,000)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if args.messages is not None:
        if args.messages < 1:
            parser.error("--messages must be at least 1")
        sizes = dataclasses.replace(sizes, messages=args.messages)
    budget = SMOKE_BUDGET_SECONDS if args.smoke else SERVER_BUDGET_SECONDS
    names = [args.only] if args.only else list(SERVERS)
    if "synapse" in names:
        ensure_synapse()
    database = "postgres" if args.postgres else "sqlite"
    started = time.monotonic()
    results = measure_each(
        names, args.postgres, budget, lambda name, url: _measure(name, url, sizes, budget)
    )
    publish(
        args.out,
        "search",
        benchmark="server-side search",
        database=database,
        sizes=asdict(sizes),
        servers={name: asdict(result) for name, result in results.items()},
        summary=summarize(results.get("peyvand"), results.get("synapse")),
        started=started,
    )
    return 0


def _measure(
    name: str, database_url: str | None, sizes: SearchSizes, budget: float
) -> SearchResult:
    """One server, fresh in a new data directory that is removed afterwards."""
    stop_by = time.perf_counter() + budget
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-search-{name}-"))
    server = SERVERS[name](data_dir, database_url)
    started = time.monotonic()
    try:
        server.start()
        result = SearchResult(name, server.version())
        clock = Clock(stop_by - STOP_RESERVE_SECONDS)
        run_bounded(run_all(server.base_url, sizes, clock, result), clock)
        result.seconds = round(time.monotonic() - started, 1)
        return result
    except BaseException:
        log(f"  {name} failed; the last lines of its log:\n{server.tail()}")
        raise
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


async def run_all(base_url: str, sizes: SearchSizes, clock: Clock, result: SearchResult) -> None:
    """Seed, then query; into ``result``."""
    prefix = f"search{uuid.uuid4().hex[:6]}"
    vocabulary = words(sizes.vocabulary)
    async with new_session() as session:
        client = MatrixClient(session, base_url)
        setup_deadline = clock.after(sizes.seed_seconds)
        accounts = await bounded_map(
            (f"{prefix}-{i}" for i in range(sizes.senders + 1)),
            client.register,
            sizes.setup_concurrency,
            setup_deadline,
        )
        searcher, senders = accounts[0], accounts[1:]
        rooms = [await client.create_room(searcher) for _ in range(sizes.rooms)]
        await bounded_map(
            ((a, r) for a in senders for r in rooms),
            lambda pair: client.join(*pair),
            sizes.setup_concurrency,
            setup_deadline,
        )
        log(f"  {len(senders)} senders joined {len(rooms)} rooms")
        await seed(client, senders, rooms, vocabulary, sizes, setup_deadline, result)
        log(
            f"  seeded {result.sent} of {result.requested} messages"
            f" ({result.messages_per_second:.0f}/s)"
        )
        for order in ("recent", "rank"):
            result.orders[order] = await run_queries(
                client, searcher, order, query_terms(vocabulary), sizes, clock
            )
            figures = result.orders[order]
            log(f"  {order}: p50 {figures.p50_ms:.1f} ms, p99 {figures.p99_ms:.1f} ms")


async def seed(
    client: MatrixClient,
    senders: list[Account],
    rooms: list[str],
    vocabulary: list[str],
    sizes: SearchSizes,
    deadline: float,
    result: SearchResult,
) -> None:
    """Send ``sizes.messages`` messages, spread over senders and rooms, concurrently."""
    rng = random.Random(16)
    weights = [1.0 / (rank + 1) for rank in range(len(vocabulary))]
    txn = f"s{uuid.uuid4().hex[:8]}"
    result.requested = sizes.messages

    async def send(index: int) -> bool:
        sender = senders[index % len(senders)]
        room = rooms[(index // len(senders)) % len(rooms)]
        text = sentence(rng, vocabulary, weights)
        reply = await client.send(sender, room, f"{txn}-{index}", text)
        return reply.status == 200

    mark = time.perf_counter()
    outcomes = await bounded_map(range(sizes.messages), send, sizes.send_concurrency, deadline)
    seconds = time.perf_counter() - mark
    result.sent = sum(outcomes)
    result.send_errors = len(outcomes) - result.sent
    result.truncated = len(outcomes) < sizes.messages
    result.seed_seconds = round(seconds, 1)
    result.messages_per_second = result.sent / seconds if seconds > 0 else math.nan


async def run_queries(
    client: MatrixClient,
    searcher: Account,
    order: str,
    terms: list[str],
    sizes: SearchSizes,
    clock: Clock,
) -> OrderFigures:
    """``sizes.queries_per_order`` searches, one at a time, cycling through ``terms``."""
    figures = OrderFigures()
    latencies: list[float] = []
    results: list[int] = []
    deadline = clock.after(sizes.query_seconds)
    for index in range(sizes.queries_per_order):
        if time.perf_counter() > deadline:
            break
        body = {
            "search_categories": {
                "room_events": {
                    "search_term": terms[index % len(terms)],
                    "order_by": order,
                    "filter": {"limit": 10},
                }
            }
        }
        reply = await client.request("POST", "search", body, searcher.access_token)
        figures.queries += 1
        if reply.status != 200:
            figures.errors += 1
            continue
        latencies.append(reply.seconds * 1000)
        found = len(reply.body["search_categories"]["room_events"]["results"])
        results.append(found)
        figures.empty += found == 0
    figures.p50_ms = round(percentile(latencies, 50), 2)
    figures.p99_ms = round(percentile(latencies, 99), 2)
    figures.mean_results = sum(results) / len(results) if results else math.nan
    return figures


def summarize(peyvand: SearchResult | None, synapse: SearchResult | None) -> dict[str, Any]:
    """The rows of the side-by-side table (no target: the issue asks for the figures)."""

    def both(value: Callable[[SearchResult], float]) -> tuple[float, float]:
        return (
            value(peyvand) if peyvand else math.nan,
            value(synapse) if synapse else math.nan,
        )

    def order(name: str, attr: str) -> Callable[[SearchResult], float]:
        def read(result: SearchResult) -> float:
            figures = result.orders.get(name)
            return float(getattr(figures, attr)) if figures is not None else math.nan

        return read

    rows = [
        report.row("sent", "messages seeded", "count", True, *both(lambda r: r.sent)),
        report.row(
            "seed_rate", "seeding throughput", "msg/s", True,
            *both(lambda r: r.messages_per_second),
        ),
        report.row("recent_p50", "search recent: p50", "ms", False,
                   *both(order("recent", "p50_ms"))),
        report.row("recent_p99", "search recent: p99", "ms", False,
                   *both(order("recent", "p99_ms"))),
        report.row("rank_p50", "search rank: p50", "ms", False, *both(order("rank", "p50_ms"))),
        report.row("rank_p99", "search rank: p99", "ms", False, *both(order("rank", "p99_ms"))),
        report.row(
            "errors", "search errors", "count", False,
            *both(lambda r: sum(f.errors for f in r.orders.values())),
        ),
    ]  # fmt: skip
    return report.summarize(rows, [])


if __name__ == "__main__":
    raise SystemExit(main())
