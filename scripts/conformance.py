"""Run matrix-org's sytest against a fresh Peyvand and compare with the expected passes.

Run through ``scripts/conformance`` (it sets up the venv). Each run starts a new server
(server name ``localhost:PORT`` on a free port, SQLite in a temporary directory unless
``--postgres`` or ``--database-url``, open registration, no rate limits, sytest's two
application services: scripts/sytest_appservices.py), runs the sytest client-server suite
against it with ``../shared/tools/run-sytest`` and reads the TAP.

A test is keyed by its file and name, ``tests/30rooms/01state.pl: <name>`` (the file comes
from sytest's progress output on stderr; a name repeated in one file gets `` [2]``, ...).
A pass is an ``ok`` line that is not ``# skip``. The expected list,
``tests/conformance/sytest-expected.txt``, holds one key per line, sorted.

- check (default): an expected test that did not pass is a regression and fails the run
  (exit 1); before that, the files holding regressions are run once more on another fresh
  server, and a test that passes there is reported as flaky, not as a regression. Newly
  passing tests are printed and added to the list.
- ``--update``: rewrite the list from this run's passes.

The last line is ``N passed, N failed``: sytest's passes, and the expected tests that
regressed. TAP, sytest's progress log and the server log are kept in ``--out``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sytest_appservices import RegistrationCopier, sytest_ca, write_placeholders

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_EXPECTED = ROOT / "tests" / "conformance" / "sytest-expected.txt"
DEFAULT_TIMEOUT_SECONDS = 1200.0  # a full run takes about 7 minutes on 2 cores
START_TIMEOUT_SECONDS = 60.0
MAX_RETRIED_REGRESSIONS = 30  # more than this is no flake: do not spend time retrying
# Files run in a sytest process of their own, each on a fresh server. sytest's mock push
# gateway (tests/01http-server.pl) never drops an awaiter whose wait timed out, and that
# file's "Don't get pushed for rooms you've muted" (which expects the legacy
# ``.m.rule.contains_user_name`` that spec v1.17 removed: it fails here by design) leaves
# one that answers every later push request: in the same process the later push tests
# fail ("This request has already been completed") and a retry loop they leave running
# fails whichever test runs when it misreads a request (SYN-606, SYN-627).
ALONE: tuple[str, ...] = ("tests/61push/01message-pushed.pl",)
# The files run-sytest runs when given none (it leaves these folders out).
_LEFT_OUT = ("tests/50federation", "tests/80torture")

_RESULT = re.compile(r"^(ok|not ok) (\d+) (.*)$")
_SKIP = re.compile(r" # skip( .*)?$")
_TODO = re.compile(r" # TODO .*$")
_SUBTESTS = re.compile(r" \(\d+ subtests\)$")
_FILE_HEADER = re.compile(r"^(tests/\S+\.pl):$")
_TEST_START = re.compile(r"^\s+Test (\d+) ")
_PLAN = re.compile(r"^1\.\.(\d+)$")


# --- reading sytest's output ----------------------------------------------------------


@dataclass
class Outcome:
    """One sytest run: every test's key and result, in the order run."""

    results: dict[str, str] = field(default_factory=dict)  # key -> "pass" | "skip" | "fail"
    planned: int | None = None  # the TAP plan (1..N): absent if sytest did not finish

    def keys(self, result: str) -> list[str]:
        return [key for key, got in self.results.items() if got == result]

    @property
    def passed(self) -> set[str]:
        return set(self.keys("pass"))

    @property
    def complete(self) -> bool:
        return self.planned is not None and self.planned == len(self.results)

    def files(self) -> set[str]:
        return {file_of(key) for key in self.results}

    def merged(self, other: Outcome) -> Outcome:
        """This run's results, then ``other``'s (run after it, on other files)."""
        planned = (
            self.planned + other.planned
            if self.planned is not None and other.planned is not None
            else None
        )
        return Outcome({**self.results, **other.results}, planned)


def file_of(key: str) -> str:
    return key.split(": ", 1)[0]


def numbered_files(progress: Iterable[str]) -> dict[int, str]:
    """Test number -> sytest file, from sytest's progress output (its stderr)."""
    files: dict[int, str] = {}
    current = "?"
    for line in progress:
        header = _FILE_HEADER.match(line)
        if header:
            current = header.group(1)
            continue
        start = _TEST_START.match(line)
        if start:
            files[int(start.group(1))] = current
    return files


def parse_tap(tap: Iterable[str], files: dict[int, str]) -> Outcome:
    """The results of sytest's TAP; indented lines (a multi-test's steps) are not tests."""
    outcome = Outcome()
    seen: collections.Counter[str] = collections.Counter()
    for line in tap:
        line = line.rstrip("\n")
        plan = _PLAN.match(line)
        if plan:
            outcome.planned = int(plan.group(1))
            continue
        match = _RESULT.match(line)
        if not match:
            continue
        status, number, rest = match.group(1), int(match.group(2)), match.group(3)
        if status == "ok" and _SKIP.search(rest):
            result, name = "skip", _SKIP.sub("", rest)
        else:
            result = "pass" if status == "ok" else "fail"
            name = _SUBTESTS.sub("", _TODO.sub("", rest).removeprefix("(expected fail) "))
        key = f"{files.get(number, '?')}: {name}"
        seen[key] += 1
        if seen[key] > 1:
            key = f"{key} [{seen[key]}]"
        outcome.results[key] = result
    return outcome


def read_outcome(tap_path: Path, progress_path: Path) -> Outcome:
    progress = progress_path.read_text(encoding="latin-1").splitlines()
    tap = tap_path.read_text(encoding="utf-8", errors="replace").splitlines()
    return parse_tap(tap, numbered_files(progress))


def read_expected(path: Path) -> list[str]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def write_expected(path: Path, keys: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{key}\n" for key in sorted(set(keys))), encoding="utf-8")


def failures_by_file(outcome: Outcome) -> list[tuple[str, list[str]]]:
    """Failing tests grouped by file, the biggest group first."""
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for key in outcome.keys("fail"):
        file, _, name = key.partition(": ")
        groups[file].append(name)
    return sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))


# --- running a server and sytest ------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Server:
    """A running server: where sytest reaches it, and its process (to signal it)."""

    base_url: str
    server_name: str
    pid: int


@contextlib.contextmanager
def peyvand(
    data_dir: Path,
    log_path: Path,
    database_url: str | None,
    appservice_files: Sequence[Path] = (),
    ca_file: Path | None = None,
) -> Iterator[Server]:
    """A fresh server for sytest, stopped on exit, loading ``appservice_files`` and
    trusting ``ca_file`` (besides the system's authorities) for its outbound TLS."""
    port = free_port()
    server_name = f"localhost:{port}"
    command = [
        sys.executable, "-m", "peyvand", "generate-config",
        "--server-name", server_name, "--data-dir", str(data_dir), "--port", str(port),
        "--open-registration", "--no-rate-limits",
    ]  # fmt: skip
    if database_url is not None:
        command += ["--database-url", database_url]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    # Guest accounts, as sytest configures Synapse (allow_guest_access).
    config_path = data_dir / "peyvand.toml"
    config_text = config_path.read_text()
    assert "\nallow_guest_access = false\n" in config_text
    config_text = config_text.replace(
        "\nallow_guest_access = false\n", "\nallow_guest_access = true\n"
    )
    # sytest's push gateway listens on localhost (its own HTTPS test server), as Synapse's
    # test config allows.
    assert "\ngateway_allowed_networks = []\n" in config_text
    config_text = config_text.replace(
        "\ngateway_allowed_networks = []\n",
        '\ngateway_allowed_networks = ["127.0.0.0/8", "::1/128"]\n',
    )
    assert "\napp_service_config_files = []\n" in config_text
    files = json.dumps([str(path) for path in appservice_files])
    config_text = config_text.replace(
        "\napp_service_config_files = []\n", f"\napp_service_config_files = {files}\n"
    )
    config_path.write_text(config_text)
    trust = {} if ca_file is None else {"SSL_CERT_FILE": str(ca_file)}
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "peyvand", "serve", "--config", str(data_dir / "peyvand.toml")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **trust},
        )
        try:
            wait_ready(process, f"{base_url}/_matrix/client/versions", log_path)
            yield Server(base_url, server_name, process.pid)
            if process.poll() is not None:
                print(f"!! the server exited with {process.returncode} during the run")
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def wait_ready(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        if process.poll() is not None:
            log = log_path.read_text(errors="replace")
            raise SystemExit(f"peyvand serve exited with {process.returncode}:\n{log}")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url, timeout=2) as response,
        ):
            if response.status == 200:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"no answer from {url} in {START_TIMEOUT_SECONDS:.0f} s")
        time.sleep(0.1)


def run_sytest(
    run_sytest_path: Path,
    server: Server,
    files: Sequence[str],
    tap_path: Path,
    progress_path: Path,
    timeout: float,
    tmpdir: Path,
    started: Callable[[int], None],
) -> bool:
    """Run sytest, TAP to ``tap_path`` and its progress to ``progress_path`` (each file's
    name echoed as it starts), its work directory under ``tmpdir``, ``started`` told its
    process group; False if it was stopped at ``timeout`` seconds."""
    tmpdir.mkdir(parents=True, exist_ok=True)
    with tap_path.open("wb") as tap, progress_path.open("wb") as progress:
        process = subprocess.Popen(
            [str(run_sytest_path), server.base_url, server.server_name, *files],
            stdin=subprocess.DEVNULL,
            stdout=tap,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, to stop it as a whole
            env={**os.environ, "TMPDIR": str(tmpdir)},
        )
        started(process.pid)
        assert process.stderr is not None
        echo = threading.Thread(target=copy_progress, args=(process.stderr, progress), daemon=True)
        echo.start()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            echo.join(5)
            return False
        echo.join(5)
        return True


def copy_progress(source: IO[bytes], target: IO[bytes]) -> None:
    for line in source:
        target.write(line)
        target.flush()
        header = _FILE_HEADER.match(line.decode("latin-1").rstrip("\n"))
        if header:
            print(f"   {header.group(1)}", flush=True)


@contextlib.contextmanager
def databases(args: argparse.Namespace) -> Iterator[Iterator[str | None]]:
    """Yields a source of fresh database URLs, one per server: None for SQLite (in the
    server's data directory), new databases of a throwaway PostgreSQL cluster
    (``--postgres``), or ``--database-url`` (once)."""
    if args.postgres:
        sys.path.insert(0, str(ROOT / "tests"))
        from harness.postgres import PostgresCluster  # type: ignore[import-not-found]

        cluster = PostgresCluster.start()
        try:
            yield _fresh_databases(cluster)
        finally:
            cluster.destroy()
    elif args.database_url:
        yield iter([args.database_url])
    else:
        yield itertools.repeat(None)


def _fresh_databases(cluster: Any) -> Iterator[str | None]:
    while True:
        yield cluster.create_database("sytest")


def sytest_run(
    args: argparse.Namespace,
    database_url: str | None,
    files: Sequence[str],
    out: Path,
    label: str,
) -> tuple[Outcome, bool]:
    """Fresh server, sytest over ``files`` (all when empty), results; True if it finished."""
    tap_path, progress_path = out / f"{label}.tap", out / f"{label}.log"
    data_dir = Path(tempfile.mkdtemp(prefix="peyvand-conformance-"))
    sytest_tmp = data_dir / "sytest-tmp"
    placeholders = write_placeholders(data_dir / "appservices")
    log_path = out / f"{label}-server.log"
    try:
        ca = sytest_ca(args.run_sytest)
        with peyvand(data_dir, log_path, database_url, placeholders, ca) as server:
            print(
                f"==> sytest against {server.base_url} (server name {server.server_name}); "
                f"output in {out}",
                flush=True,
            )
            copier = RegistrationCopier(sytest_tmp, placeholders, server.pid, server.base_url)
            finished = run_sytest(
                args.run_sytest,
                server,
                files,
                tap_path,
                progress_path,
                args.timeout,
                sytest_tmp,
                copier.watch,
            )
            copier.stop.set()
            copier.join(30)
            if not copier.loaded:
                print("!! the server did not load sytest's application service registrations")
    finally:
        if args.keep:
            print(f"server data kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    if not finished:
        print(f"!! sytest stopped after {args.timeout:.0f} s (--timeout): results are partial")
    return read_outcome(tap_path, progress_path), finished


# --- the command ----------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    shared = Path(os.environ.get("PEYVAND_SHARED", ROOT.parent / "shared"))
    parser = argparse.ArgumentParser(
        prog="scripts/conformance",
        description="Run sytest against a fresh Peyvand and compare with the expected passes.",
    )
    parser.add_argument("files", nargs="*", help="only these sytest files (tests/...pl)")
    parser.add_argument(
        "--update", action="store_true", help="rewrite the expected list from this run"
    )
    parser.add_argument("--expected", type=Path, default=DEFAULT_EXPECTED)
    parser.add_argument(
        "--run-sytest",
        type=Path,
        default=Path(os.environ.get("RUN_SYTEST", shared / "tools" / "run-sytest")),
        help="default $RUN_SYTEST, else $PEYVAND_SHARED/tools/run-sytest (../shared)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=os.environ.get("CONFORMANCE_OUT"),
        help="keep TAP and logs here (default $CONFORMANCE_OUT, else a new temporary dir)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=float(os.environ.get("CONFORMANCE_TIMEOUT", DEFAULT_TIMEOUT_SECONDS)),
        help="stop a sytest run after this many seconds (default $CONFORMANCE_TIMEOUT or "
        f"{DEFAULT_TIMEOUT_SECONDS:.0f})",
    )
    parser.add_argument(
        "--retries", type=int, default=1, help="re-runs of the files holding regressions"
    )
    backend = parser.add_mutually_exclusive_group()
    backend.add_argument(
        "--postgres", action="store_true", help="a throwaway PostgreSQL cluster, not SQLite"
    )
    backend.add_argument("--database-url", help="an existing, EMPTY PostgreSQL database")
    parser.add_argument("--keep", action="store_true", help="keep the server's data directory")
    parser.add_argument(
        "--from",
        dest="from_dir",
        type=Path,
        help="do not run: read sytest.tap and sytest.log from this directory (an earlier --out)",
    )
    args = parser.parse_args(argv)
    if args.database_url or args.from_dir:
        args.retries = 0  # one database, used up by the first run; nothing to run
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    if args.from_dir is not None:
        outcome = read_outcome(args.from_dir / "sytest.tap", args.from_dir / "sytest.log")
        for tap in sorted(args.from_dir.glob("sytest-alone*.tap")):
            outcome = outcome.merged(read_outcome(tap, tap.with_suffix(".log")))
        return report(args, outcome, outcome.complete, args.from_dir, iter([]), started)
    if not os.access(args.run_sytest, os.X_OK):
        print(
            f"{args.run_sytest} not found: set PEYVAND_SHARED to the shared folder "
            "(../shared beside the clone) or RUN_SYTEST to run-sytest",
            file=sys.stderr,
        )
        return 2
    sytest = sytest_dir(args.run_sytest)
    if not args.files and not (sytest / "tests").is_dir():
        print(f"no sytest tests in {sytest}: set SYTEST_DIR", file=sys.stderr)
        return 2
    files = args.files or all_files(sytest)
    if args.database_url is not None:
        files, alone = split_alone(files)
        if alone:
            print(f"!! left out, each runs alone on a database of its own: {', '.join(alone)}")
            args.files = files  # only the tests of the files run are compared
    out = args.out or Path(tempfile.mkdtemp(prefix="peyvand-sytest-"))
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("sytest-alone*"):  # an earlier run's, which --from would read
        stale.unlink()
    with databases(args) as urls:
        outcome, finished = run_files(args, urls, files, out, "sytest")
        return report(args, outcome, finished, out, urls, started)


def run_files(
    args: argparse.Namespace,
    urls: Iterator[str | None],
    files: Sequence[str],
    out: Path,
    label: str,
) -> tuple[Outcome, bool]:
    """``files`` run by sytest, those of ``ALONE`` each in a run of its own (on a fresh
    server and database); the results, and whether all finished."""
    together, alone = split_alone(files)
    outcome, finished = sytest_run(args, next(urls), together, out, label)
    for index, file in enumerate(alone, 1):
        own, own_finished = sytest_run(args, next(urls), [file], out, f"{label}-alone{index}")
        outcome, finished = outcome.merged(own), finished and own_finished
    return outcome, finished


def sytest_dir(run_sytest_path: Path) -> Path:
    """sytest's checkout, where run-sytest finds it."""
    configured = os.environ.get("SYTEST_DIR")
    if configured:
        return Path(configured)
    return run_sytest_path.resolve().parent.parent / "vendor" / "sytest"


def all_files(sytest: Path) -> list[str]:
    """The files run-sytest runs when given none, sorted."""
    return sorted(
        path
        for path in (p.relative_to(sytest).as_posix() for p in (sytest / "tests").rglob("*.pl"))
        if not path.startswith(_LEFT_OUT)
    )


def split_alone(files: Sequence[str]) -> tuple[list[str], list[str]]:
    """``files`` to run together, and those of ``ALONE`` among them, each to run by
    itself (given only ``ALONE`` files, they run together, as given)."""
    alone = [f for f in files if f in ALONE]
    together = [f for f in files if f not in ALONE]
    if not together:
        return list(files), []
    return together, alone


def report(
    args: argparse.Namespace,
    outcome: Outcome,
    finished: bool,
    out: Path,
    urls: Iterator[str | None],
    started: float,
) -> int:
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    passed = outcome.passed
    write_failures(outcome, out / "failures.txt")
    expected = read_expected(args.expected)
    # With files named, only their tests are compared (and, with --update, replaced).
    in_scope = {key for key in expected if not args.files or file_of(key) in args.files}
    print(
        f"sytest: {len(passed)} passed, {len(outcome.keys('skip'))} skipped, "
        f"{len(outcome.keys('fail'))} failed of {len(outcome.results)} run "
        f"in {minutes}m{seconds:02d}s; expected to pass: {len(in_scope)} ({args.expected})"
    )
    print(f"TAP, logs and failures by file (failures.txt) in {out}")

    if args.update:
        if not finished:
            print("not updating the list from an unfinished run")
            print(f"{len(passed)} passed, {len(in_scope)} failed")
            return 1
        kept = set(expected) - in_scope
        write_expected(args.expected, kept | passed)
        lost = sorted(in_scope - passed)
        gained = sorted(passed - in_scope)
        print(f"wrote {len(kept | passed)} tests to {args.expected}")
        print_list(f"no longer expected ({len(lost)}):", lost)
        print_list(f"newly expected ({len(gained)}):", gained)
        print(f"{len(passed)} passed, 0 failed")
        return 0

    new = sorted(passed - set(expected))
    if new:
        write_expected(args.expected, set(expected) | passed)
        print_list(f"newly passing ({len(new)}), added to {args.expected}:", new)

    regressed = sorted(in_scope - passed)
    flaky: list[str] = []
    if regressed and args.retries > 0 and len(regressed) <= MAX_RETRIED_REGRESSIONS:
        for attempt in range(1, args.retries + 1):
            files = sorted({file_of(key) for key in regressed})
            print(f"==> retry {attempt}: {len(regressed)} regressed tests, in {len(files)} files")
            retry, _ = run_files(args, urls, files, out, f"retry{attempt}")
            recovered = [key for key in regressed if key in retry.passed]
            flaky += recovered
            regressed = [key for key in regressed if key not in retry.passed]
            if not regressed:
                break
    print_list(f"flaky: failed, then passed on a retry ({len(flaky)}):", flaky)
    print_list(f"REGRESSIONS: expected to pass, did not ({len(regressed)}):", regressed)
    if not finished:
        print("sytest did not finish")
    print(f"{len(passed)} passed, {len(regressed)} failed")
    return 1 if regressed or not finished else 0


def write_failures(outcome: Outcome, path: Path) -> None:
    lines = []
    for file, names in failures_by_file(outcome):
        lines.append(f"{len(names):4d} {file}")
        lines += [f"       {name}" for name in names]
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def print_list(title: str, keys: Sequence[str]) -> None:
    if keys:
        print(title)
        for key in keys:
            print(f"  {key}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
