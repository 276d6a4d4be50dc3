"""``peyvand deployment run``: a multi-process deployment on one machine, for development
(issue 21, "Operations"; docs/operator-guide.md, "A deployment on one machine").

Each instance of the config's ``[workers]`` runs as ``python -m peyvand serve --config F
--worker NAME``, in a session of its own (a terminal's Ctrl-C reaches this command only,
which stops the processes in order). They start one after the other, each once the
one before answers ``/health`` (the first migrates the database alone). Every line a
process writes (its log) is printed with its name in front; a line longer than
``LINE_LIMIT_BYTES`` is printed in pieces of that size, each with the name (output is
read in chunks, never a whole line at once, so no line stops the relay and leaves a
process blocked on a full pipe). SIGINT, SIGTERM or SIGHUP (the terminal closed) sends
SIGTERM to every process still running, and SIGKILL to one that has not exited
``STOP_TIMEOUT_SECONDS`` later. On Linux each process is also sent SIGTERM by the kernel
when this command dies without stopping it (``PR_SET_PDEATHSIG``: killed with SIGKILL,
or crashed), so no server outlives it; the processes are started from the event loop's
thread, which lives as long as the command. A process that exits on its own is
reported with its status and left stopped (nothing is restarted: killing one is how its
takeover is tried); the command ends once none is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import BinaryIO

import aiohttp

# A process's time to finish its requests and stop its components (``peyvand serve``
# gives requests 10 s).
STOP_TIMEOUT_SECONDS = 30.0
# How long a process gets to answer /health before the next one starts anyway.
START_TIMEOUT_SECONDS = 120.0
_HEALTH_POLL_SECONDS = 0.2
# A longer output line is printed in pieces of this many bytes.
LINE_LIMIT_BYTES = 64 * 1024
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# prctl(2)'s option: the signal a process gets when its parent (thread) dies.
_PR_SET_PDEATHSIG = 1


async def _relay(name: str, width: int, process: asyncio.subprocess.Process) -> None:
    """Print ``process``'s output lines, each after its name, until it closes its
    output; once this command's own output fails (a closed terminal) the rest is read
    and dropped, so the process never blocks on a full pipe."""
    assert process.stdout is not None
    prefix = f"{name:<{width}} | ".encode()
    out: BinaryIO | None = sys.stdout.buffer
    pending = b""
    while chunk := await process.stdout.read(LINE_LIMIT_BYTES):
        *lines, pending = (pending + chunk).split(b"\n")
        while len(pending) >= LINE_LIMIT_BYTES:
            lines.append(pending[:LINE_LIMIT_BYTES])
            pending = pending[LINE_LIMIT_BYTES:]
        out = _print(out, prefix, lines)
    _print(out, prefix, [pending] if pending else [])


def _print(out: BinaryIO | None, prefix: bytes, lines: Sequence[bytes]) -> BinaryIO | None:
    """Write ``lines`` to ``out``, each after ``prefix``; ``out``, or None once writing
    failed."""
    if out is None or not lines:
        return out
    try:
        out.write(b"".join(prefix + line + b"\n" for line in lines))
        out.flush()
    except OSError:
        return None
    return out


def _die_with_parent(parent: int, prctl: Callable[[int, int], int]) -> None:
    """In a child before it runs ``peyvand serve``: SIGTERM when ``parent`` dies, at once
    when it already has."""
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def _child_setup() -> Callable[[], None] | None:
    """What a child runs before ``peyvand serve`` (Linux only; resolved here, as the
    child may not load anything)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return functools.partial(_die_with_parent, os.getpid(), prctl)


async def _stop(processes: Sequence[asyncio.subprocess.Process]) -> None:
    running = [p for p in processes if p.returncode is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    waits = [asyncio.ensure_future(p.wait()) for p in running]
    if not waits:
        return
    _, late = await asyncio.wait(waits, timeout=STOP_TIMEOUT_SECONDS)
    for process in running:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    if late:
        await asyncio.wait(late)


async def _healthy(url: str, process: asyncio.subprocess.Process, stopping: asyncio.Event) -> None:
    """Return once ``url`` answers /health with 200, the process has exited, a signal
    came, or ``START_TIMEOUT_SECONDS`` have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_SECONDS
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while process.returncode is None and not stopping.is_set() and loop.time() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{url}/health") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(_HEALTH_POLL_SECONDS)


async def run_deployment(config_path: str, instances: Sequence[tuple[str, str]]) -> int:
    """Run the processes ``instances`` names (each with its URL) until a signal or until
    all have exited: 0 when stopped by a signal with every process still running then,
    else 1."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stopping.set)
    child_setup = _child_setup()
    width = max(len(name) for name, _ in instances)
    processes: dict[str, asyncio.subprocess.Process] = {}
    relays: list[asyncio.Task[None]] = []
    failed = False
    try:
        for name, url in instances:
            if stopping.is_set():
                break
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "peyvand", "serve", "--config", config_path,
                "--worker", name,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                preexec_fn=child_setup,
            )  # fmt: skip
            processes[name] = process
            relays.append(asyncio.create_task(_relay(name, width, process)))
            print(f"{name:<{width}} | started, pid {process.pid}", flush=True)
            await _healthy(url, process, stopping)
        exits = {asyncio.ensure_future(p.wait()): n for n, p in processes.items()}
        stop = asyncio.ensure_future(stopping.wait())
        while exits and not stopping.is_set():
            done, _ = await asyncio.wait([*exits, stop], return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                name = exits.pop(finished, "")
                if name:
                    failed = True
                    status = finished.result()
                    print(f"{name:<{width}} | exited with status {status}", flush=True)
        stop.cancel()
        for pending in exits:
            pending.cancel()
    finally:
        await _stop(list(processes.values()))
        await asyncio.gather(*relays, return_exceptions=True)
        for signum in _STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    for name, process in processes.items():
        print(f"{name:<{width}} | stopped ({process.returncode})", flush=True)
    return 1 if failed else 0
