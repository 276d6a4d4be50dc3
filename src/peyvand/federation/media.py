"""Reading another server's media answer (Server-Server API, "Content Repository":
``GET /_matrix/federation/v1/media/download/{mediaId}``; the deprecated
``GET /_matrix/media/v3/download/{serverName}/{mediaId}`` as a fallback).

The federation answer is ``multipart/mixed``: a JSON metadata part, then the content (or a
``Location`` to fetch it from, which this server does not follow). The legacy answer is
the content itself. Either way the content streams into a ``ContentWriter`` as it arrives,
bounded in size; the writer is discarded if anything fails.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Generic, Protocol, TypeVar
from urllib.parse import unquote

import aiohttp

_FILENAME_STAR: Final = re.compile(r"filename\*\s*=\s*(?:utf-8|UTF-8)''([^;]+)")
_FILENAME: Final = re.compile(r'filename\s*=\s*"?([^";]+)"?')
_CHUNK: Final = 256 * 1024
_METADATA_LIMIT: Final = 64 * 1024

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class ContentWriter(Protocol[T_co]):
    """Where downloaded content goes (``media.files.FileWriter``): ``finish`` gives what
    was written, ``discard`` drops it."""

    @property
    def size(self) -> int: ...

    async def write(self, chunk: bytes) -> None: ...

    async def finish(self) -> T_co: ...

    async def discard(self) -> None: ...


OpenWriter = Callable[[], Awaitable[ContentWriter[T]]]


@dataclass(frozen=True, slots=True)
class RemoteMedia(Generic[T]):
    """Downloaded media: its type, its file name if the server gave one, and the
    finished writer's result (the caller commits or discards it)."""

    content_type: str
    upload_name: str | None
    written: T


class MediaDownloadError(Exception):
    """The media could not be fetched (unknown, too large, unreachable, malformed)."""


async def read_multipart(
    resp: aiohttp.ClientResponse, max_size: int, open_writer: OpenWriter[T]
) -> RemoteMedia[T]:
    """The content part of a ``multipart/mixed`` federation media answer."""
    if resp.content_type != "multipart/mixed":
        raise MediaDownloadError(f"expected multipart/mixed, got {resp.content_type!r}")
    reader = aiohttp.MultipartReader.from_response(resp)
    metadata = await reader.next()
    if not isinstance(metadata, aiohttp.BodyPartReader):
        raise MediaDownloadError("no metadata part")
    await _drain(metadata, _METADATA_LIMIT)
    part = await reader.next()
    if not isinstance(part, aiohttp.BodyPartReader):
        raise MediaDownloadError("no content part")
    if "Location" in part.headers:
        raise MediaDownloadError("the remote server redirects media elsewhere")
    written = await _stream(part.read_chunk, max_size, open_writer)
    return RemoteMedia(
        part.headers.get("Content-Type", "application/octet-stream"),
        filename_of(part.headers.get("Content-Disposition", "")),
        written,
    )


async def read_plain(
    resp: aiohttp.ClientResponse, max_size: int, open_writer: OpenWriter[T]
) -> RemoteMedia[T]:
    """The body of a legacy ``/_matrix/media/v3/download`` answer."""
    written = await _stream(resp.content.read, max_size, open_writer)
    return RemoteMedia(
        resp.headers.get("Content-Type", "application/octet-stream"),
        filename_of(resp.headers.get("Content-Disposition", "")),
        written,
    )


async def _stream(
    read: Callable[[int], Awaitable[bytes]], max_size: int, open_writer: OpenWriter[T]
) -> T:
    writer = await open_writer()
    try:
        while chunk := await read(_CHUNK):
            if writer.size + len(chunk) > max_size:
                raise MediaDownloadError("the remote media is too large")
            await writer.write(chunk)
        return await writer.finish()
    except BaseException:
        await writer.discard()
        raise


async def _drain(part: aiohttp.BodyPartReader, limit: int) -> None:
    size = 0
    while chunk := await part.read_chunk(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise MediaDownloadError("the metadata part is too large")


def filename_of(disposition: str) -> str | None:
    """The file name in a Content-Disposition header (RFC 6266), if any."""
    match = _FILENAME_STAR.search(disposition)
    if match:
        return unquote(match.group(1).strip())
    match = _FILENAME.search(disposition)
    return match.group(1).strip() if match else None
