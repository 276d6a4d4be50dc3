"""The C allocator's settings (``peyvand.cli.allocator``), read back from glibc's own
``malloc_stats`` report in a child process (the settings are per process)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not hasattr(os, "confstr") or not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc only"
)

# Four threads allocate from the C heap (128 KiB less a little: below glibc's mmap
# threshold, so from an arena), then glibc prints one "Arena N:" block per arena to stderr.
_CHILD = """
import ctypes, sys, threading
from peyvand.cli.allocator import release_free_memory, use_one_arena
if sys.argv[1] == "one":
    use_one_arena()
def work():
    blocks = [bytearray(120_000) for _ in range(20)]
    del blocks
threads = [threading.Thread(target=work) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
release_free_memory()
ctypes.CDLL(None).malloc_stats()
"""


def arenas(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return sum(line.startswith("Arena ") for line in result.stderr.splitlines())


def test_threads_share_one_arena() -> None:
    assert arenas("default") > 1  # glibc's default: the threads got arenas of their own
    assert arenas("one") == 1
