"""The C allocator's settings for a long-running server: glibc only, nothing elsewhere.

glibc gives threads arenas of their own (up to eight per core), each keeping what its
threads freed: about 1 MiB per arena for this server's threads (SQLite's, the executor's
for password hashing). Start-up leaves freed blocks in the main heap that
``malloc_trim`` hands back. Together (issue 15, ``python -m bench.run --only peyvand``, two
runs each): idle RSS 57.9 -> 57.1 MiB, peak 72.2-72.9 -> 72.0-72.1 MiB.
"""

from __future__ import annotations

import ctypes
import logging
import os

logger = logging.getLogger(__name__)

# mallopt's parameter number for the arena limit (glibc's malloc.h).
_M_ARENA_MAX = -8


def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (which has ``mallopt``, ``malloc_trim``)."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
    except (ValueError, OSError):  # not a glibc system: the name is unknown
        return None
    return ctypes.CDLL(None)


def use_one_arena() -> None:
    """Every thread allocates from the main heap; call before any thread starts."""
    libc = _glibc()
    if libc is not None and not libc.mallopt(_M_ARENA_MAX, 1):
        logger.warning("the C allocator refused a limit of one arena")


def release_free_memory() -> None:
    """Hand the heap's free pages back to the system."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
