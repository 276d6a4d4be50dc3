"""Content-addressed media files under ``<data_dir>/media``.

Every file is named by the SHA-256 of its bytes (``blobs/ab/cd/<sha256>``), so identical
uploads and thumbnails are stored once. New bytes stream into ``tmp/`` while they are
hashed, are fsynced, and only then renamed into place: a reader never sees a partial file
and an aborted upload leaves nothing behind once its temporary file is removed (which
``start`` also does for files left by a crash).

Callers pair each file operation with its database rows under ``KeyedLocks.hold(sha256)``:
"rename into place + insert row" and "check no row refers to it + unlink" then never
interleave, so the database and the files agree.

All file system calls run in the default executor: the event loop never waits on a disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

_SHA256: Final = re.compile(r"[0-9a-f]{64}")
# Chunks are buffered up to this size before one write in the executor.
_WRITE_BUFFER: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """A finished temporary file, ready to be committed under its hash."""

    path: Path
    sha256: str
    size: int


class FileWriter:
    """Streams bytes into a temporary file while hashing them.

    ``write`` buffers and flushes in the executor; ``finish`` fsyncs and returns the
    ``WrittenFile``; ``discard`` (always safe, also after ``finish``) removes the file unless
    it was committed.
    """

    def __init__(self, path: Path, file: BinaryIO) -> None:
        self._path = path
        self._file = file
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    async def write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self._size += len(chunk)
        self._buffer += chunk
        if len(self._buffer) >= _WRITE_BUFFER:
            await self._flush()

    async def _flush(self) -> None:
        data = bytes(self._buffer)
        self._buffer.clear()
        await asyncio.get_running_loop().run_in_executor(None, self._file.write, data)

    async def finish(self) -> WrittenFile:
        await self._flush()
        await asyncio.get_running_loop().run_in_executor(None, self._sync_and_close)
        return WrittenFile(self._path, self._hash.hexdigest(), self._size)

    def _sync_and_close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    async def discard(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._close_and_remove)

    def _close_and_remove(self) -> None:
        self._file.close()
        self._path.unlink(missing_ok=True)


class MediaFiles:
    """The media directory: ``blobs/`` (committed files) and ``tmp/`` (in progress)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "blobs"
        self._tmp = root / "tmp"

    async def start(self) -> None:
        """Create the directories and remove temporary files left by a crash."""
        await asyncio.get_running_loop().run_in_executor(None, self._prepare)

    def _prepare(self) -> None:
        self._blobs.mkdir(parents=True, exist_ok=True)
        if self._tmp.exists():
            shutil.rmtree(self._tmp)
        self._tmp.mkdir(parents=True)

    def path_of(self, sha256: str) -> Path:
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self._blobs / sha256[:2] / sha256[2:4] / sha256

    async def open_writer(self) -> FileWriter:
        """A new, empty temporary file."""
        path = self._tmp / secrets.token_hex(16)
        file = await asyncio.get_running_loop().run_in_executor(None, open, path, "xb")
        return FileWriter(path, file)

    async def write_bytes(self, data: bytes) -> WrittenFile:
        """A temporary file holding ``data`` (small payloads: thumbnails, previews)."""
        writer = await self.open_writer()
        try:
            await writer.write(data)
            return await writer.finish()
        except BaseException:
            await writer.discard()
            raise

    async def commit(self, written: WrittenFile) -> None:
        """Move ``written`` to its content-addressed place (caller holds its hash lock).

        If identical content is already stored, the temporary copy is dropped instead.
        """
        await asyncio.get_running_loop().run_in_executor(None, self._commit, written)

    def _commit(self, written: WrittenFile) -> None:
        target = self.path_of(written.sha256)
        if target.exists():
            written.path.unlink(missing_ok=True)
            return
        _make_directories(target.parent)
        os.replace(written.path, target)
        _fsync_directory(target.parent)

    async def discard(self, written: WrittenFile) -> None:
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: written.path.unlink(missing_ok=True)
        )

    async def remove(self, sha256: str) -> None:
        """Delete a committed file (caller holds its hash lock and checked no row uses it)."""
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.path_of(sha256).unlink(missing_ok=True)
        )

    async def exists(self, sha256: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(None, self.path_of(sha256).exists)

    async def read(self, sha256: str) -> bytes:
        """The whole file (only for small files: thumbnails)."""
        return await asyncio.get_running_loop().run_in_executor(
            None, self.path_of(sha256).read_bytes
        )

    async def stored_hashes(self, settled_before: float) -> AsyncIterator[list[str]]:
        """Every committed file's hash, one leaf directory (a bounded batch) at a time,
        of the files last changed before ``settled_before`` (seconds since the epoch)."""
        loop = asyncio.get_running_loop()
        for directory in await loop.run_in_executor(None, self._leaf_directories):
            names = await loop.run_in_executor(None, _settled_names, directory, settled_before)
            hashes = [name for name in names if _SHA256.fullmatch(name)]
            if hashes:
                yield hashes

    def _leaf_directories(self) -> list[Path]:
        return sorted(leaf for top in _subdirectories(self._blobs) for leaf in _subdirectories(top))


def _make_directories(directory: Path) -> None:
    """``mkdir -p directory``, fsyncing the parent of each directory on the way that was
    missing (``blobs/ab``, ``blobs/ab/cd``), so a crash cannot lose the new entries and with
    them a committed file."""
    missing: list[Path] = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        # Another thread may create it first (another hash with the same prefix); it is
        # fsynced here all the same, as this commit must not depend on that thread's fsync.
        path.mkdir(exist_ok=True)
        _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _subdirectories(path: Path) -> Iterable[Path]:
    if not path.is_dir():
        return []
    return [entry for entry in path.iterdir() if entry.is_dir()]


def _settled_names(path: Path, before: float) -> list[str]:
    names = []
    for entry in os.scandir(path):
        with contextlib.suppress(FileNotFoundError):
            if entry.stat().st_mtime < before:
                names.append(entry.name)
    return names
