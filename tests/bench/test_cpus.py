"""``bench.cpus``: the server and the bench's client on CPUs of their own, and
``bench.servers.Server`` starting a server on its CPUs."""

from __future__ import annotations

import os
import shutil
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: bench/

from bench.servers import Server

from bench import cpus

# A stand-in server: answers GET /_matrix/client/versions (each request in a thread of
# its own, as a server's later threads) with the CPUs of the thread answering.
_SERVER = """
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = ",".join(map(str, sorted(os.sched_getaffinity(0)))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


class _StandIn(Server):
    name = "stand-in"

    def command(self) -> list[str]:
        return [sys.executable, "-c", _SERVER, str(self.port)]


def test_the_cpus_split_in_two_halves_of_their_own() -> None:
    usable = sorted(os.sched_getaffinity(0))
    placement = cpus.split()
    if len(usable) < 2 or shutil.which("taskset") is None:
        assert placement is None
        return
    assert placement is not None
    assert placement.server and placement.client
    assert sorted(placement.server + placement.client) == usable
    assert not set(placement.server) & set(placement.client)
    assert placement.to_json() == {
        "server": list(placement.server),
        "client": list(placement.client),
    }
    assert placement.to_json(database=True)["database"] == list(placement.client)


def test_a_placed_server_and_its_threads_run_on_the_server_cpus(tmp_path: Path) -> None:
    placement = cpus.split()
    if placement is None:  # one CPU, or no taskset: nothing is placed
        assert len(os.sched_getaffinity(0)) < 2 or shutil.which("taskset") is None
        return
    server = _StandIn(tmp_path)
    server.cpus = placement
    server.start()
    try:
        # The process started is the server itself (taskset execs it): its PID is
        # the one measured and stopped.
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[0] == sys.executable.encode()
        assert os.sched_getaffinity(server.pid) == set(placement.server)
        url = f"{server.base_url}/_matrix/client/versions"
        with urllib.request.urlopen(url, timeout=10) as response:
            answered_on = response.read().decode()
        assert answered_on == ",".join(map(str, placement.server))
    finally:
        server.stop()
