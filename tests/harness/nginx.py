"""A real nginx (Debian's) in front of a deployment's processes, on loopback: its own
prefix directory, configuration from ``peyvand deployment nginx``, run in the foreground
and stopped with SIGTERM."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from harness.ports import free_port
from harness.processes import start_logged, stop_process
from harness.required import require_installed

START_TIMEOUT_SECONDS = 10.0


class NginxMissing(Exception):
    pass


def find_nginx() -> Path:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found is None:
        raise NginxMissing("nginx is not installed (Debian: apt-get install nginx)")
    return Path(found)


class Nginx:
    """nginx listening on 127.0.0.1:<port> with the deployment of ``config_path`` and,
    with ``federation_port``, terminating federation TLS on 127.0.0.1:<federation_port>
    with the config's certificate."""

    def __init__(self, config_path: Path, prefix: Path, federation_port: int | None = None) -> None:
        self._binary = require_installed("nginx", find_nginx, NginxMissing)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._prefix = prefix
        prefix.mkdir(parents=True, exist_ok=True)
        self._ports = [self.port] if federation_port is None else [self.port, federation_port]
        command = [
            sys.executable, "-m", "peyvand", "deployment", "nginx", "--config", str(config_path),
            "--listen", f"127.0.0.1:{self.port}",
        ]  # fmt: skip
        if federation_port is not None:
            command += ["--federation-listen", f"127.0.0.1:{federation_port}"]
        generated = subprocess.run(
            command, capture_output=True, text=True, timeout=60, check=True
        ).stdout
        (prefix / "peyvand.conf").write_text(generated, encoding="utf-8")
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "\n".join(
            f"    {kind}_temp_path {prefix / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (prefix / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {prefix / 'nginx.pid'};\n"
            f"error_log {prefix / 'error.log'} warn;\n"
            "events { worker_connections 1024; }\n"
            f"http {{\n    access_log {prefix / 'access.log'};\n{temp}\n"
            f"    include {prefix / 'peyvand.conf'};\n}}\n",
            encoding="utf-8",
        )
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        """The master process's (its worker is its child)."""
        if self._process is None:
            raise RuntimeError("nginx is not running")
        return self._process.pid

    def start(self) -> None:
        self._process, self._log = start_logged(
            "nginx",
            [str(self._binary), "-p", str(self._prefix), "-c", str(self._prefix / "nginx.conf"),
             "-e", str(self._prefix / "error.log")],
            self._prefix / "nginx.out",
            env=os.environ,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        waiting = list(self._ports)
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", waiting[0]), timeout=1).close()
            except OSError:
                time.sleep(0.05)
                continue
            waiting.pop(0)
            if not waiting:
                return
        raise RuntimeError(f"nginx did not listen within {START_TIMEOUT_SECONDS} s: {self.log()}")

    def stop(self) -> None:
        stop_process(self._process, 10)
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        parts = [self._prefix / "nginx.out", self._prefix / "error.log"]
        return "\n".join(p.read_text(errors="replace") for p in parts if p.exists())
