"""``python -m bench.search [--postgres] [--only NAME] [--smoke] [--messages N]
[--keep DIR | --reuse DIR] [--seed-seconds S]``: server-side search (``POST /search``,
issue 16), Peyvand and Synapse side by side.

Each server is started fresh (new data directory, or a new database on one throwaway
PostgreSQL cluster) and seeded the same way: ``senders`` users in ``rooms`` rooms, which
the searcher created, send ``messages`` messages (default 100,000) concurrently, many
rooms and senders at once, each a sentence of words drawn from a Zipf-like vocabulary
(English-looking and Persian words), so a search term's frequency ranges from about one
message in ten to one in thousands. Then the searcher runs the query mix one query at a
time (``order_by`` ``recent``, as Element asks, and ``rank``, ten results a page), and
the latency of each is kept: p50 and p99 per order. Seeding is not part of the query
figures; its throughput is reported beside them.

Seeding Synapse takes about an hour at 100,000 messages, so the two phases can also run
apart (SQLite only): ``--keep DIR`` seeds each server into ``DIR/<server>/`` (kept), writes
``DIR/<server>.json`` (the seeding figures, the searcher's user ID and access token, the
room IDs and the vocabulary size) and runs no queries; ``--reuse DIR`` later starts each
server again on its kept data directory (on a new port), runs one untimed pass of the
query mix per order (cold caches after the restart), then the timed queries, and
publishes the queries' figures with the kept seeding figures beside them.

Every loop is bounded: seeding stops at ``seed_seconds`` (the messages sent so far are
reported, ``truncated``), the queries at ``query_seconds``, the whole server's run at
``SERVER_BUDGET_SECONDS`` (more when ``--seed-seconds`` or ``--keep`` raise the seeding
bound; ``2 * query_seconds + REUSE_MARGIN_SECONDS`` with ``--reuse``). The table goes to
stdout, the figures to ``bench/results/search-<timestamp>-<db>.json`` (``--keep``: to
``DIR/<server>.json`` only).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import random
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.client import Account, MatrixClient, Reply, new_session
from bench.run import REPO, RESULTS_DIR, log, machine, measure_each, publish, run_bounded
from bench.servers import PeyvandServer, Server, SynapseServer, ensure_synapse
from bench.workloads import Clock, bounded_map, percentile

SERVER_BUDGET_SECONDS = 5400.0
SMOKE_BUDGET_SECONDS = 180.0
STOP_RESERVE_SECONDS = 15.0
# Start, stop and set-up time on top of the seeding bound when --seed-seconds or --keep
# raise it (registration and joins count against the seeding bound itself).
BUDGET_MARGIN_SECONDS = 900.0
# --keep at full sizes: Synapse's 100,000 messages take about an hour on a quiet 2-core
# machine (20-40 a second) and longer on a busy one; its 5,000 joins come first.
KEEP_SEED_SECONDS = 9000.0
# --reuse: the server's run is its restart, a settle, the warm-up pass and the two orders.
REUSE_MARGIN_SECONDS = 240.0
REUSE_SETTLE_SECONDS = 5.0
WARM_UP_SECONDS = 120.0
KEPT_FORMAT = 1
SETUP_BCRYPT_ROUNDS = 4
SERVERS: dict[str, Callable[[Path, str | None], Server]] = {
    "peyvand": lambda data_dir, url: PeyvandServer(data_dir, url, SETUP_BCRYPT_ROUNDS),
    "synapse": lambda data_dir, url: SynapseServer(
        data_dir, url, {"bcrypt_rounds": SETUP_BCRYPT_ROUNDS}
    ),
}
# The seeding sizes a kept corpus fixes (the query sizes stay those of the mode).
CORPUS_SIZES = (
    "messages", "rooms", "senders", "vocabulary", "send_concurrency", "setup_concurrency",
    "seed_seconds",
)  # fmt: skip
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
    # Registration, rooms and joins before the seeding proper.
    setup_seconds: float = math.nan
    # --reuse: when, at which commit and with which server version the corpus was seeded.
    seeded: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Corpus:
    """What the queries need of a seeded server."""

    searcher: Account
    rooms: list[str]
    vocabulary: int

    def terms(self) -> list[str]:
        return query_terms(words(self.vocabulary))


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
    parser.add_argument(
        "--seed-seconds", type=float, help="the seeding bound (default: 4500; 9000 with --keep)"
    )
    phases = parser.add_mutually_exclusive_group()
    phases.add_argument(
        "--keep", type=Path, metavar="DIR", help="seed only; keep the data in DIR for --reuse"
    )
    phases.add_argument(
        "--reuse", type=Path, metavar="DIR", help="query only, the servers kept by --keep DIR"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    names = [args.only] if args.only else list(SERVERS)
    if args.postgres and (args.keep or args.reuse):
        parser.error("--keep and --reuse are for SQLite only")
    if args.reuse is not None:
        if args.messages is not None or args.seed_seconds is not None:
            parser.error("--reuse seeds nothing: no --messages or --seed-seconds")
        return _reuse(parser, args.reuse, names, sizes, args.out)
    if args.messages is not None:
        if args.messages < 1:
            parser.error("--messages must be at least 1")
        sizes = dataclasses.replace(sizes, messages=args.messages)
    budget = SMOKE_BUDGET_SECONDS if args.smoke else SERVER_BUDGET_SECONDS
    seed_seconds = args.seed_seconds
    if seed_seconds is None and args.keep is not None and not args.smoke:
        seed_seconds = KEEP_SEED_SECONDS
    if seed_seconds is not None:
        if seed_seconds <= 0:
            parser.error("--seed-seconds must be positive")
        sizes = dataclasses.replace(sizes, seed_seconds=seed_seconds)
        budget = max(budget, seed_seconds + 2 * sizes.query_seconds + BUDGET_MARGIN_SECONDS)
    if args.keep is not None:
        for name in names:
            for path in (args.keep / name, _kept_json(args.keep, name)):
                if path.exists():
                    parser.error(f"{path} exists: --keep needs a new directory")
    if "synapse" in names:
        ensure_synapse()
    database = "postgres" if args.postgres else "sqlite"
    started = time.monotonic()
    results = measure_each(
        names,
        args.postgres,
        budget,
        lambda name, url: _measure(name, url, sizes, budget, args.keep),
    )
    summary = summarize(results.get("peyvand"), results.get("synapse"))
    if args.keep is not None:
        print(report.table(summary))
        kept = ", ".join(str(_kept_json(args.keep, name)) for name in results)
        print(f"\nseeded and kept ({time.monotonic() - started:.0f} s): {kept}")
        only = f" --only {args.only}" if args.only else ""
        smoke = " --smoke" if args.smoke else ""
        print(f"queries: python -m bench.search{smoke}{only} --reuse {args.keep}")
        return 0
    publish(
        args.out,
        "search",
        benchmark="server-side search",
        database=database,
        sizes=asdict(sizes),
        servers={name: asdict(result) for name, result in results.items()},
        summary=summary,
        started=started,
    )
    return 0


def _measure(
    name: str, database_url: str | None, sizes: SearchSizes, budget: float, keep: Path | None
) -> SearchResult:
    """One server, fresh in a new data directory: seeded, then queried and the directory
    removed; or (``keep``) seeded into ``keep/<name>/``, kept, and described in
    ``keep/<name>.json``."""
    stop_by = time.perf_counter() + budget
    if keep is None:
        data_dir = Path(tempfile.mkdtemp(prefix=f"bench-search-{name}-"))
    else:
        data_dir = keep / name
        data_dir.mkdir(parents=True)
    server = SERVERS[name](data_dir, database_url)
    started = time.monotonic()
    try:
        server.start()
        result = SearchResult(name, server.version())
        clock = Clock(stop_by - STOP_RESERVE_SECONDS)
        if keep is None:
            run_bounded(run_all(server.base_url, sizes, clock, result), clock)
        else:
            corpus = run_bounded(run_seed(server.base_url, sizes, clock, result), clock)
            _write_kept(keep, name, sizes, corpus, result)
        result.seconds = round(time.monotonic() - started, 1)
        return result
    except BaseException:
        log(f"  {name} failed; the last lines of its log:\n{server.tail()}")
        raise
    finally:
        server.stop()
        if keep is None:
            shutil.rmtree(data_dir, ignore_errors=True)


def _reuse(
    parser: argparse.ArgumentParser, keep: Path, names: list[str], sizes: SearchSizes, out: Path
) -> int:
    """``--reuse``: the queries against each server kept by ``--keep``, then the table and
    the JSON, with the kept seeding figures."""
    kept: dict[str, dict[str, Any]] = {}
    for name in names:
        path = _kept_json(keep, name)
        if not path.is_file() or not (keep / name).is_dir():
            parser.error(f"no {path} and {keep / name}/: seed them with --keep {keep} first")
        kept[name] = json.loads(path.read_text(encoding="utf-8"))
        if kept[name].get("format") != KEPT_FORMAT:
            parser.error(f"{path}: not a --keep description this version reads")
    corpus_sizes = {key: kept[names[0]]["sizes"][key] for key in CORPUS_SIZES}
    for name in names[1:]:
        if {key: kept[name]["sizes"][key] for key in CORPUS_SIZES} != corpus_sizes:
            parser.error(f"{keep}: the servers were seeded at different sizes")
    sizes = dataclasses.replace(sizes, **corpus_sizes)
    budget = 2 * sizes.query_seconds + REUSE_MARGIN_SECONDS
    if "synapse" in names:
        ensure_synapse()
    started = time.monotonic()
    results = measure_each(
        names,
        False,
        budget,
        lambda name, _url: _measure_kept(name, keep, kept[name], sizes, budget),
    )
    publish(
        out,
        "search",
        benchmark="server-side search (seeded by --keep, queried by --reuse)",
        database="sqlite",
        sizes=asdict(sizes),
        servers={name: asdict(result) for name, result in results.items()},
        summary=summarize(results.get("peyvand"), results.get("synapse")),
        started=started,
    )
    return 0


def _measure_kept(
    name: str, keep: Path, kept: dict[str, Any], sizes: SearchSizes, budget: float
) -> SearchResult:
    """One server restarted on its kept data directory: the queries only."""
    stop_by = time.perf_counter() + budget
    server = REOPEN[name](keep / name)
    started = time.monotonic()
    try:
        server.start()
        result = _kept_result(name, server.version(), kept)
        time.sleep(REUSE_SETTLE_SECONDS)
        clock = Clock(stop_by - STOP_RESERVE_SECONDS)
        corpus = Corpus(
            Account(kept["searcher"]["user_id"], kept["searcher"]["access_token"]),
            list(kept["rooms"]),
            int(kept["vocabulary"]),
        )
        run_bounded(run_kept(server.base_url, corpus, sizes, clock, result), clock)
        result.seconds = round(time.monotonic() - started, 1)
        return result
    except BaseException:
        log(f"  {name} failed; the last lines of its log:\n{server.tail()}")
        raise
    finally:
        server.stop()


def _kept_json(keep: Path, name: str) -> Path:
    return keep / f"{name}.json"


SEEDING_FIELDS = (
    "requested", "sent", "send_errors", "truncated", "seed_seconds", "messages_per_second",
    "setup_seconds",
)  # fmt: skip


def _write_kept(
    keep: Path, name: str, sizes: SearchSizes, corpus: Corpus, result: SearchResult
) -> None:
    """``keep/<name>.json``: what ``--reuse`` needs to query the kept server, and the
    seeding figures it publishes."""
    document = {
        "format": KEPT_FORMAT,
        "server": name,
        "version": result.version,
        "database": "sqlite",
        "seeded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": machine(),
        "sizes": asdict(sizes),
        "seeding": {key: getattr(result, key) for key in SEEDING_FIELDS},
        "searcher": {
            "user_id": corpus.searcher.user_id,
            "access_token": corpus.searcher.access_token,
        },
        "rooms": corpus.rooms,
        "vocabulary": corpus.vocabulary,
        "terms": corpus.terms(),
    }
    report.write_json(_kept_json(keep, name), document)
    log(f"  kept: {keep / name}/ and {_kept_json(keep, name)}")


def _kept_result(name: str, version: str, kept: dict[str, Any]) -> SearchResult:
    """A result carrying the kept seeding figures (JSON null back to NaN)."""
    result = SearchResult(name, version)
    for key, value in kept["seeding"].items():
        if key in SEEDING_FIELDS:
            setattr(result, key, math.nan if value is None else value)
    result.seeded = {
        key: kept[key] for key in ("seeded_at", "commit", "version", "machine") if key in kept
    }
    return result


def _commit() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=30,
        check=False,
    )  # fmt: skip
    return result.stdout.strip() or "unknown"


class _KeptPeyvand(PeyvandServer):
    """Peyvand again on a kept data directory: its own config, on a new port."""

    def __init__(self, data_dir: Path) -> None:
        Server.__init__(self, data_dir)
        self.config_path = data_dir / "peyvand.toml"
        text = self.config_path.read_text(encoding="utf-8")
        text, count = re.subn(r"^port = \d+$", f"port = {self.port}", text, count=1, flags=re.M)
        if count != 1:
            raise RuntimeError(f"{self.config_path} has no port line")
        self.config_path.write_text(text, encoding="utf-8")


class _KeptSynapse(SynapseServer):
    """Synapse again on a kept data directory: its own config (secrets, signing key,
    SQLite database), its one listener on a new port."""

    def __init__(self, data_dir: Path) -> None:
        Server.__init__(self, data_dir)
        self.config_path = data_dir / "homeserver.yaml"
        config = json.loads(self.config_path.read_text(encoding="utf-8"))  # written as JSON
        (listener,) = config["listeners"]
        listener["port"] = self.port
        self.config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")


REOPEN: dict[str, Callable[[Path], Server]] = {
    "peyvand": _KeptPeyvand,
    "synapse": _KeptSynapse,
}


async def run_all(base_url: str, sizes: SearchSizes, clock: Clock, result: SearchResult) -> None:
    """Seed, then query; into ``result``."""
    corpus = await run_seed(base_url, sizes, clock, result)
    await run_kept(base_url, corpus, sizes, clock, result, warm_up=False)


async def run_seed(base_url: str, sizes: SearchSizes, clock: Clock, result: SearchResult) -> Corpus:
    """Register, create the rooms, join them and seed them; the figures into ``result``."""
    prefix = f"search{uuid.uuid4().hex[:6]}"
    vocabulary = words(sizes.vocabulary)
    async with new_session() as session:
        client = MatrixClient(session, base_url)
        setup_deadline = clock.after(sizes.seed_seconds)
        mark = time.perf_counter()
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
        result.setup_seconds = round(time.perf_counter() - mark, 1)
        log(f"  {len(senders)} senders joined {len(rooms)} rooms ({result.setup_seconds} s)")
        await seed(client, senders, rooms, vocabulary, sizes, setup_deadline, result)
        log(
            f"  seeded {result.sent} of {result.requested} messages"
            f" ({result.messages_per_second:.0f}/s)"
        )
        return Corpus(searcher, rooms, sizes.vocabulary)


async def run_kept(
    base_url: str,
    corpus: Corpus,
    sizes: SearchSizes,
    clock: Clock,
    result: SearchResult,
    warm_up: bool = True,
) -> None:
    """The queries of both orders against a seeded server; ``warm_up``: after one untimed
    pass of the query mix per order."""
    terms = corpus.terms()
    async with new_session() as session:
        client = MatrixClient(session, base_url)
        if warm_up:
            deadline = clock.after(WARM_UP_SECONDS)
            for order in ("recent", "rank"):
                for term in terms:
                    if time.perf_counter() > deadline:
                        break
                    reply = await search_once(client, corpus.searcher, term, order)
                    if reply.status != 200:
                        raise RuntimeError(f"warm-up search answered {reply.status}: {reply.body}")
            log(f"  warmed up: {len(terms)} queries per order")
        for order in ("recent", "rank"):
            result.orders[order] = await run_queries(
                client, corpus.searcher, order, terms, sizes, clock
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
        reply = await search_once(client, searcher, terms[index % len(terms)], order)
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


async def search_once(client: MatrixClient, searcher: Account, term: str, order: str) -> Reply:
    """One ``POST /search`` over the room events, ten results a page."""
    body = {
        "search_categories": {
            "room_events": {"search_term": term, "order_by": order, "filter": {"limit": 10}}
        }
    }
    return await client.request("POST", "search", body, searcher.access_token)


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
