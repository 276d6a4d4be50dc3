"""The side-by-side table, the ratios, the targets, and the JSON written with them."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.workloads import Figures

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerResult:
    """One server's run: what the workloads measured plus memory from /proc."""

    name: str
    version: str
    figures: Figures
    rss_idle_bytes: int
    rss_peak_bytes: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "workloads": asdict(self.figures),
            "cpu_seconds_per_1000_messages": self.figures.cpu_seconds_per_1000_messages,
            "rss_idle_bytes": self.rss_idle_bytes,
            "rss_peak_bytes": self.rss_peak_bytes,
            "seconds": self.seconds,
        }


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    value: Callable[[ServerResult], float]


METRICS = [
    Metric("seq_rate", "1 sequential send", "msg/s", True,
           lambda r: r.figures.sequential.messages_per_second),
    Metric("seq_p50", "1 send latency p50", "ms", False, lambda r: r.figures.sequential.p50_ms),
    Metric("seq_p99", "1 send latency p99", "ms", False, lambda r: r.figures.sequential.p99_ms),
    Metric("conc_rate", "2 concurrent send (32/8)", "msg/s", True,
           lambda r: r.figures.concurrent.messages_per_second),
    Metric("conc_p50", "2 send latency p50", "ms", False, lambda r: r.figures.concurrent.p50_ms),
    Metric("conc_p99", "2 send latency p99", "ms", False, lambda r: r.figures.concurrent.p99_ms),
    Metric("conc_errors", "2 send errors", "count", False,
           lambda r: r.figures.concurrent.errors),
    Metric("deliv_p50", "3 delivery p50 (200 users)", "ms", False,
           lambda r: r.figures.delivery.p50_ms),
    Metric("deliv_p99", "3 delivery p99", "ms", False, lambda r: r.figures.delivery.p99_ms),
    Metric("deliv_req_p50", "3 delivery p50 from the send's request", "ms", False,
           lambda r: r.figures.delivery.from_request_p50_ms),
    Metric("deliv_req_p99", "3 delivery p99 from the send's request", "ms", False,
           lambda r: r.figures.delivery.from_request_p99_ms),
    Metric("deliv_missing", "3 deliveries missing", "count", False,
           lambda r: r.figures.delivery.missing),
    Metric("isync_p50", "4 initial sync p50", "ms", False,
           lambda r: r.figures.initial_sync.p50_ms),
    Metric("isync_p99", "4 initial sync p99", "ms", False,
           lambda r: r.figures.initial_sync.p99_ms),
    Metric("isync_size", "4 initial sync size", "KiB", False,
           lambda r: r.figures.initial_sync.size_bytes / 1024),
    Metric("rss_idle", "5 RSS idle", "MiB", False, lambda r: r.rss_idle_bytes / MIB),
    Metric("rss_peak", "5 RSS peak", "MiB", False, lambda r: r.rss_peak_bytes / MIB),
    Metric("cpu_per_1000", "6 CPU per 1,000 messages", "s", False,
           lambda r: r.figures.cpu_seconds_per_1000_messages),
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Target:
    """Peyvand's figure divided by Synapse's must be at least (or at most) ``bound``."""

    key: str
    label: str
    bound: float
    at_least: bool

    def check(self, ratio: float) -> bool:
        if math.isnan(ratio):
            return False
        return ratio >= self.bound if self.at_least else ratio <= self.bound


TARGETS = [
    Target("conc_rate", "send throughput (2) >= 10x Synapse", 10.0, True),
    # From the send's request: a /sync woken before its sender's 200 reads 0 from the 200.
    Target("deliv_req_p99", "delivery p99 (3) <= 1/3 of Synapse", 1 / 3, False),
    Target("rss_peak", "peak RSS <= 1/4 of Synapse", 0.25, False),
    Target("cpu_per_1000", "CPU per 1,000 messages <= 1/10 of Synapse", 0.1, False),
]


def ratio(peyvand: float, synapse: float) -> float:
    """Peyvand / Synapse; NaN when either is missing or Synapse's is zero."""
    if math.isnan(peyvand) or math.isnan(synapse) or synapse == 0:
        return math.nan
    return peyvand / synapse


def row(
    key: str, label: str, unit: str, higher_is_better: bool, peyvand: float, synapse: float
) -> dict[str, Any]:
    """One line of the table: a figure on both servers and their ratio."""
    return {
        "key": key, "label": label, "unit": unit, "higher_is_better": higher_is_better,
        "peyvand": peyvand, "synapse": synapse, "ratio": ratio(peyvand, synapse),
    }  # fmt: skip


# ``--workers``: the deployment's figure divided by one process's.
WORKER_TARGETS = [
    Target("conc_rate", "send throughput (2) >= 1.6x one process", 1.6, True),
]


def build(
    peyvand: ServerResult | None,
    synapse: ServerResult | None,
    targets: list[Target] = TARGETS,
) -> dict[str, Any]:
    """Rows (metric, both values, ratio) and targets, as plain data for printing and JSON
    (with ``--workers``, the deployment in ``peyvand``'s place and one process in
    ``synapse``'s)."""
    rows = [
        row(
            metric.key,
            metric.label,
            metric.unit,
            metric.higher_is_better,
            metric.value(peyvand) if peyvand else math.nan,
            metric.value(synapse) if synapse else math.nan,
        )
        for metric in METRICS
    ]
    return summarize(rows, targets)


def summarize(rows: list[dict[str, Any]], targets: list[Target]) -> dict[str, Any]:
    """``rows`` (from ``row``) with each target checked against its row's ratio."""
    by_key = {r["key"]: r for r in rows}
    checked = [
        {"label": t.label, "bound": t.bound, "ratio": by_key[t.key]["ratio"],
         "pass": t.check(by_key[t.key]["ratio"])}
        for t in targets
    ]  # fmt: skip
    return {"rows": rows, "targets": checked}


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _advantage(row: dict[str, Any]) -> str:
    """How many times better Peyvand is (``<1x`` means worse)."""
    r = row["ratio"]
    if math.isnan(r) or r == 0:
        return "-"
    times = r if row["higher_is_better"] else 1 / r
    return f"{times:.1f}x"


def table(summary: dict[str, Any], columns: tuple[str, str] = ("Peyvand", "Synapse")) -> str:
    """The report as Markdown: figures, then targets (if any)."""
    first, second = columns
    lines = [
        f"| workload / figure | unit | {first} | {second} | {first}/{second} | {first} better by |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in summary["rows"]:
        lines.append(
            f"| {row['label']} | {row['unit']} | {_fmt(row['peyvand'])} | "
            f"{_fmt(row['synapse'])} | {_fmt(row['ratio'])} | {_advantage(row)} |"
        )
    if not summary["targets"]:
        return "\n".join(lines)
    lines += ["", f"| target | {first}/{second} | result |", "| --- | ---: | --- |"]
    for target in summary["targets"]:
        verdict = "PASS" if target["pass"] else "MISS"
        lines.append(f"| {target['label']} | {_fmt(target['ratio'])} | {verdict} |")
    return "\n".join(lines)


def _no_nan(value: Any) -> Any:
    """JSON has no NaN: write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_no_nan(document), indent=2, allow_nan=False) + "\n")
