"""sytest's application services in a conformance run (its tests/60app-services).

sytest makes its two appservice registrations itself (tests/02as-info.pl: random tokens;
tests/05homeserver.pl: URLs on its own HTTPS test server, whose certificate sytest's
keys/ca.crt signs) and writes them into its work directory as
``server-0/appserv-{0,1}.yaml``, also for a server it does not start (``-I Manual``). So the
server starts with valid placeholder registrations at known paths and trusts sytest's CA
(``SSL_CERT_FILE``; the system's authorities stay trusted through their directory), and
sytest runs with a known ``TMPDIR``, where run-sytest makes its work directory. Once sytest
has written its files, ``RegistrationCopier`` copies them over the placeholders and sends the
server SIGHUP: it reloads its registrations (a file that does not load keeps the
placeholders; only the appservice tests then fail).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from http import HTTPStatus
from pathlib import Path

import yaml

COUNT = 2  # sytest's tests/02as-info.pl makes two appservices
POLL_SECONDS = 0.05
LIMIT_SECONDS = 300.0  # sytest writes them before its first test, seconds after it starts
RELOAD_SECONDS = 20.0


def sytest_ca(run_sytest: Path) -> Path | None:
    """The CA that signs sytest's test server (run-sytest's SYTEST_DIR, else its default)."""
    sytest_dir = os.environ.get("SYTEST_DIR")
    base = Path(sytest_dir) if sytest_dir else run_sytest.parent.parent / "vendor" / "sytest"
    ca = base / "keys" / "ca.crt"
    return ca if ca.is_file() else None


def write_placeholders(directory: Path) -> list[Path]:
    """Valid registrations owning nothing (no URL, empty namespaces), one per sytest
    appservice: the server refuses to start on a file it cannot load."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(COUNT):
        path = directory / f"appserv-{index}.yaml"
        path.write_text(
            f"id: placeholder-{index}\n"
            "url: null\n"
            f"as_token: {secrets.token_hex(16)}\n"
            f"hs_token: {secrets.token_hex(16)}\n"
            f"sender_localpart: placeholder-appservice-{index}\n"
            "namespaces: {users: [], aliases: [], rooms: []}\n",
            encoding="utf-8",
        )
        paths.append(path)
    return paths


class RegistrationCopier(threading.Thread):
    """Waits (at most ``limit`` seconds, or until ``stop``) for sytest's registrations under
    ``tmpdir/*/server-0/``, then loads them into the server before sytest goes on.

    sytest runs its first test right after writing them, so its process group is paused
    (SIGSTOP) from the moment they appear until the server answers with their as_token
    (``/account/whoami``): the copies, SIGHUP and the reload happen in between."""

    def __init__(
        self,
        tmpdir: Path,
        targets: Sequence[Path],
        server_pid: int,
        base_url: str,
        limit: float = LIMIT_SECONDS,
    ) -> None:
        super().__init__(name="sytest-appservices", daemon=True)
        self._tmpdir = tmpdir
        self._targets = list(targets)
        self._server_pid = server_pid
        self._base_url = base_url
        self._limit = limit
        self._sytest_group = 0
        self.stop = threading.Event()
        self.loaded = False  # the server answers with sytest's as_tokens

    def watch(self, sytest_group: int) -> None:
        """Start watching for the files of the sytest run whose process group this is."""
        self._sytest_group = sytest_group
        self.start()

    def run(self) -> None:
        deadline = time.monotonic() + self._limit
        while time.monotonic() < deadline and not self.stop.wait(POLL_SECONDS):
            sources = self._sources()
            if not sources:
                continue
            try:
                os.killpg(self._sytest_group, signal.SIGSTOP)
            except ProcessLookupError:
                return
            try:
                registrations = _read_all(sources)
                if registrations is None:  # caught while writing: let sytest finish them
                    continue
                for source, target in zip(sources, self._targets, strict=True):
                    shutil.copyfile(source, target)
                os.kill(self._server_pid, signal.SIGHUP)
                tokens = [str(registration["as_token"]) for registration in registrations]
                self.loaded = self._wait_loaded(tokens, time.monotonic() + RELOAD_SECONDS)
                return
            except (OSError, KeyError):  # sytest's runner removes its work directory at exit
                return
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._sytest_group, signal.SIGCONT)

    def _sources(self) -> list[Path]:
        """sytest's registration files, all of them or none."""
        found = []
        for index in range(COUNT):
            matches = sorted(self._tmpdir.glob(f"*/server-0/appserv-{index}.yaml"))
            if not matches:
                return []
            found.append(matches[0])
        return found

    def _wait_loaded(self, as_tokens: Sequence[str], deadline: float) -> bool:
        while time.monotonic() < deadline:
            if all(self._known(token) for token in as_tokens):
                return True
            time.sleep(POLL_SECONDS)
        return False

    def _known(self, as_token: str) -> bool:
        request = urllib.request.Request(
            f"{self._base_url}/_matrix/client/v3/account/whoami",
            headers={"Authorization": f"Bearer {as_token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return bool(response.status == HTTPStatus.OK)
        except (urllib.error.URLError, OSError):
            return False


def _read_all(sources: Sequence[Path]) -> list[dict[str, object]] | None:
    """The registrations, or None while one is not completely written."""
    registrations = []
    for source in sources:
        try:
            registration = yaml.safe_load(source.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            return None
        if not isinstance(registration, dict) or not {"as_token", "url"} <= registration.keys():
            return None
        registrations.append(registration)
    return registrations
