"""The files of a compliance export: written with their SHA-256, published whole, verified.

An export is written into a staging folder beside its destination
(``.<name>.<random>.partial``), every file hashed as it is written. ``manifest.json`` is
written last; only then is the folder renamed to its destination, or packed into the
destination zip, so an export that failed or was interrupted never looks complete. A crash
can leave a ``.partial`` folder behind; nothing reads it, and it may be removed.

Every file system call runs in the default executor, and files are copied and hashed in
chunks of ``CHUNK`` bytes: the event loop never waits on a disk and memory stays flat
whatever the size of an attachment.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, TypeVar

import orjson

from peyvand.types import JsonDict

CHUNK = 1024 * 1024
MANIFEST = "manifest.json"

_T = TypeVar("_T")


class ExportError(Exception):
    """The export cannot be made (bad range, destination taken...); ``str`` says why."""


class ExportNotFound(ExportError):
    """The room or user to export is unknown to this server."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of an export: its path inside the export (``/``-separated), SHA-256 (hex)
    and size in bytes."""

    path: str
    sha256: str
    size: int

    def as_json(self) -> JsonDict:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


async def _in_executor(function: Callable[..., _T], *args: Any) -> _T:
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


class OutputFile:
    """A file of the export being written: each ``write`` hashes its bytes and writes them
    in the executor (callers hand over a batch at a time)."""

    def __init__(self, relative: str, file: IO[bytes]) -> None:
        self.relative = relative
        self._file = file
        self._hash = hashlib.sha256()
        self._size = 0
        self._closed = False

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self._hash.update(data)
        self._size += len(data)
        await _in_executor(self._file.write, data)

    async def close(self) -> FileEntry:
        self._closed = True
        await _in_executor(_sync_and_close, self._file)
        return FileEntry(self.relative, self._hash.hexdigest(), self._size)

    async def abandon(self) -> None:
        if not self._closed:
            self._closed = True
            await _in_executor(self._file.close)


class JsonArrayWriter:
    """A JSON array written one batch of items at a time (``[``, items, ``]``)."""

    def __init__(self, output: OutputFile) -> None:
        self._output = output
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    async def write(self, items: list[Any]) -> None:
        if not items:
            return
        parts = []
        for item in items:
            parts.append(b"[\n  " if self._count == 0 else b",\n  ")
            parts.append(orjson.dumps(item))
            self._count += 1
        await self._output.write(b"".join(parts))

    @property
    def output(self) -> OutputFile:
        return self._output

    async def finish(self) -> None:
        """Close the array (the file stays open: ``StagedExport.close_writer``)."""
        await self._output.write(b"[]\n" if self._count == 0 else b"\n]\n")


class StagedExport:
    """An export being written: ``open``/``copy_in`` add files, ``write_manifest`` seals
    them, ``publish`` moves the result to its destination; ``discard`` removes it all."""

    def __init__(self, destination: Path, staging: Path, as_zip: bool) -> None:
        self.destination = destination
        self._staging = staging
        self._as_zip = as_zip
        self._entries: list[FileEntry] = []
        self._open: list[OutputFile] = []

    @classmethod
    async def create(cls, destination: Path, *, as_zip: bool) -> StagedExport:
        """A staging folder beside ``destination`` (a folder to create, or with ``as_zip``
        the zip file to write, ``.zip`` appended unless it ends so); ``ExportError`` if
        ``destination`` already exists (a folder may exist if it is empty)."""
        if as_zip and destination.suffix.lower() != ".zip":
            destination = destination.with_name(destination.name + ".zip")
        staging = destination.parent / f".{destination.name}.{secrets.token_hex(4)}.partial"
        await _in_executor(_prepare, destination, staging, as_zip)
        return cls(destination, staging, as_zip)

    @property
    def files(self) -> list[FileEntry]:
        """The files closed so far, by path."""
        return sorted(self._entries, key=lambda entry: entry.path)

    async def open(self, relative: str) -> OutputFile:
        path = self._path(relative)
        file = await _in_executor(_open_new, path)
        output = OutputFile(relative, file)
        self._open.append(output)
        return output

    async def close(self, output: OutputFile) -> FileEntry:
        entry = await output.close()
        self._open.remove(output)
        self._entries.append(entry)
        return entry

    async def close_writer(self, writer: JsonArrayWriter) -> FileEntry:
        await writer.finish()
        return await self.close(writer.output)

    async def write_file(self, relative: str, data: bytes) -> FileEntry:
        output = await self.open(relative)
        await output.write(data)
        return await self.close(output)

    async def copy_in(self, relative: str, source: Path) -> FileEntry | None:
        """Copy ``source`` (streamed and hashed) to ``relative``; None if it is missing."""
        entry = await _in_executor(_copy_hashed, source, self._path(relative), relative)
        if entry is not None:
            self._entries.append(entry)
        return entry

    async def write_manifest(self, manifest: JsonDict) -> str:
        """Write ``manifest.json`` (after every other file); returns its SHA-256."""
        data = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        output = await self.open(MANIFEST)
        await output.write(data)
        entry = await output.close()
        self._open.remove(output)
        return entry.sha256

    async def publish(self) -> Path:
        """Move the finished export to its destination (or pack it into the zip)."""
        names = [entry.path for entry in self.files] + [MANIFEST]
        await _in_executor(_publish, self._staging, self.destination, self._as_zip, names)
        return self.destination

    async def discard(self) -> None:
        for output in list(self._open):
            await output.abandon()
        self._open.clear()
        await _in_executor(shutil.rmtree, self._staging, True)

    def _path(self, relative: str) -> Path:
        return self._staging.joinpath(*PurePosixPath(relative).parts)


def _prepare(destination: Path, staging: Path, as_zip: bool) -> None:
    if destination.exists() and (as_zip or not _empty_directory(destination)):
        raise ExportError(f"{destination} already exists")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging.mkdir()


def _empty_directory(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _open_new(path: Path) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "xb")  # closed by OutputFile


def _sync_and_close(file: IO[bytes]) -> None:
    try:
        file.flush()
        os.fsync(file.fileno())
    finally:
        file.close()


def _copy_hashed(source: Path, target: Path, relative: str) -> FileEntry | None:
    digest = hashlib.sha256()
    size = 0
    try:
        reader = open(source, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        return None
    with reader:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "xb") as writer:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                writer.write(chunk)
            writer.flush()
            os.fsync(writer.fileno())
    return FileEntry(relative, digest.hexdigest(), size)


def _publish(staging: Path, destination: Path, as_zip: bool, names: list[str]) -> None:
    if not as_zip:
        _fsync_directory(staging)
        if _empty_directory(destination):
            destination.rmdir()
        os.rename(staging, destination)
        _fsync_directory(destination.parent)
        return
    partial = staging.with_name(staging.name + ".zip")
    try:
        with zipfile.ZipFile(partial, "x", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
            for name in names:
                archive.write(staging.joinpath(*PurePosixPath(name).parts), name)
        with open(partial, "rb") as written:
            os.fsync(written.fileno())
        if destination.exists():
            raise ExportError(f"{destination} already exists")
        os.rename(partial, destination)
        _fsync_directory(destination.parent)
    finally:
        partial.unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# -- verification ----------------------------------------------------------------------


def verify_manifest(path: Path) -> list[str]:
    """Re-compute the SHA-256 and size of every file ``manifest.json`` lists, in an export
    folder or zip; the problems found, each naming its file (empty: the export is intact).

    Files missing, changed, or present but not listed are reported. (The manifest itself
    is covered by the audit log entry of the export, which records its SHA-256.)
    """
    try:
        if path.is_dir():
            return _verify_folder(path)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return _verify_zip(archive)
    except OSError as exc:
        return [f"{path}: cannot be read ({exc.strerror or exc})"]
    except zipfile.BadZipFile as exc:
        return [f"{path}: damaged zip file ({exc})"]
    if not path.exists():
        return [f"{path}: no such file or folder"]
    return [f"{path}: neither an export folder nor a zip file"]


def manifest_sha256(path: Path) -> str | None:
    """The SHA-256 of the export's ``manifest.json`` (folder or zip), None if unreadable:
    compare it with the one recorded in the audit log."""
    try:
        if path.is_dir():
            with open(path / MANIFEST, "rb") as file:
                return _hash_stream(file)[0]
        with zipfile.ZipFile(path) as archive, archive.open(MANIFEST) as member:
            return _hash_stream(member)[0]
    except (OSError, KeyError, zipfile.BadZipFile):
        return None


def _verify_folder(root: Path) -> list[str]:
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        return [f"{MANIFEST}: missing"]
    with open(manifest_path, "rb") as file:
        listed, problems = _listed_files(file.read())
    present = {
        (Path(directory) / name).relative_to(root).as_posix()
        for directory, _, names in os.walk(root)
        for name in names
    }
    for relative, (sha256, size) in listed.items():
        if relative not in present:
            problems.append(f"{relative}: missing")
            continue
        with open(root.joinpath(*PurePosixPath(relative).parts), "rb") as file:
            problems += _compare(relative, sha256, size, file)
    problems += _unlisted(present, listed)
    return problems


def _verify_zip(archive: zipfile.ZipFile) -> list[str]:
    try:
        raw = archive.read(MANIFEST)
    except KeyError:
        return [f"{MANIFEST}: missing"]
    listed, problems = _listed_files(raw)
    present = {info.filename for info in archive.infolist() if not info.is_dir()}
    for relative, (sha256, size) in listed.items():
        if relative not in present:
            problems.append(f"{relative}: missing")
            continue
        try:
            with archive.open(relative) as member:
                problems += _compare(relative, sha256, size, member)
        except zipfile.BadZipFile as exc:
            problems.append(f"{relative}: damaged in the zip file ({exc})")
    problems += _unlisted(present, listed)
    return problems


def _listed_files(raw: bytes) -> tuple[dict[str, tuple[str, int]], list[str]]:
    """``{path: (sha256, size)}`` from the manifest, and the problems with it."""
    try:
        manifest = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}, [f"{MANIFEST}: not valid JSON"]
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list):
        return {}, [f"{MANIFEST}: no list of files"]
    listed: dict[str, tuple[str, int]] = {}
    problems = []
    for item in files:
        relative = item.get("path") if isinstance(item, dict) else None
        sha256 = item.get("sha256") if isinstance(item, dict) else None
        size = item.get("size") if isinstance(item, dict) else None
        if not (isinstance(relative, str) and isinstance(sha256, str) and type(size) is int):
            problems.append(f"{MANIFEST}: malformed file entry {item!r}")
        elif not _safe_relative(relative) or relative == MANIFEST:
            problems.append(f"{MANIFEST}: file path {relative!r} is not inside the export")
        else:
            listed[relative] = (sha256, size)
    return listed, problems


def _safe_relative(relative: str) -> bool:
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or "\\" in relative:
        return False
    return ".." not in parts and "." not in relative.split("/")


def _compare(relative: str, sha256: str, size: int, file: IO[bytes]) -> list[str]:
    found_hash, found_size = _hash_stream(file)
    if found_hash != sha256:
        return [f"{relative}: SHA-256 does not match (manifest {sha256}, file {found_hash})"]
    if found_size != size:
        return [f"{relative}: size does not match (manifest {size}, file {found_size})"]
    return []


def _hash_stream(file: IO[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := file.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _unlisted(present: set[str], listed: dict[str, tuple[str, int]]) -> list[str]:
    return [
        f"{relative}: not listed in the manifest"
        for relative in sorted(present - set(listed) - {MANIFEST})
    ]
