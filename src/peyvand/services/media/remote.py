"""Fetching media from the server that holds it (Server-Server API, "Content Repository":
``GET /_matrix/federation/v1/media/download/{mediaId}``).

The answer is ``multipart/mixed``: a JSON metadata part, then the content (or a
``Location`` to fetch it from, which this server does not follow). The content streams
into a temporary media file as it arrives, bounded in size. Servers without the federation
media endpoints are asked on the deprecated ``/_matrix/media/v3/download`` instead.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote

import aiohttp

from peyvand.federation.client import FederationClient, FederationError, FederationHttpError
from peyvand.media.files import MediaFiles, WrittenFile

_FILENAME_STAR: Final = re.compile(r"filename\*\s*=\s*(?:utf-8|UTF-8)''([^;]+)")
_FILENAME: Final = re.compile(r'filename\s*=\s*"?([^";]+)"?')
_CHUNK: Final = 256 * 1024
_METADATA_LIMIT: Final = 64 * 1024
_TIMEOUT_SECONDS: Final = 300.0


@dataclass(frozen=True, slots=True)
class RemoteContent:
    content_type: str
    upload_name: str | None
    # A temporary media file: the caller commits or discards it.
    written: WrittenFile


class RemoteMediaError(Exception):
    """The media could not be fetched (unknown, too large, unreachable, malformed)."""


class RemoteMediaFetcher:
    def __init__(self, client: FederationClient, files: MediaFiles) -> None:
        self._client = client
        self._files = files

    async def fetch(self, origin: str, media_id: str, max_size: int) -> RemoteContent:
        """The content of ``mxc://origin/media_id``, at most ``max_size`` bytes."""
        path = f"/_matrix/federation/v1/media/download/{quote(media_id, safe='')}"
        try:
            async with self._client.open_get(origin, path, timeout=_TIMEOUT_SECONDS) as resp:
                return await self._from_multipart(resp, max_size)
        except FederationHttpError as exc:
            if exc.status not in (400, 404, 405) or exc.errcode == "M_NOT_FOUND":
                raise RemoteMediaError(str(exc)) from exc
        except (FederationError, aiohttp.ClientError, ValueError) as exc:
            raise RemoteMediaError(str(exc)) from exc
        return await self._legacy(origin, media_id, max_size)

    async def _from_multipart(self, resp: aiohttp.ClientResponse, max_size: int) -> RemoteContent:
        if resp.content_type != "multipart/mixed":
            raise RemoteMediaError(f"expected multipart/mixed, got {resp.content_type!r}")
        reader = aiohttp.MultipartReader.from_response(resp)
        metadata = await reader.next()
        if not isinstance(metadata, aiohttp.BodyPartReader):
            raise RemoteMediaError("no metadata part")
        await _drain(metadata, _METADATA_LIMIT)
        part = await reader.next()
        if not isinstance(part, aiohttp.BodyPartReader):
            raise RemoteMediaError("no content part")
        if "Location" in part.headers:
            raise RemoteMediaError("the remote server redirects media elsewhere")
        written = await self._stream(part.read_chunk, max_size)
        return RemoteContent(
            part.headers.get("Content-Type", "application/octet-stream"),
            filename_of(part.headers.get("Content-Disposition", "")),
            written,
        )

    async def _legacy(self, origin: str, media_id: str, max_size: int) -> RemoteContent:
        path = f"/_matrix/media/v3/download/{quote(origin, safe='')}/{quote(media_id, safe='')}"
        try:
            async with self._client.open_get(
                origin, path, query={"allow_remote": "false"}, timeout=_TIMEOUT_SECONDS
            ) as resp:
                written = await self._stream(resp.content.read, max_size)
                return RemoteContent(
                    resp.headers.get("Content-Type", "application/octet-stream"),
                    filename_of(resp.headers.get("Content-Disposition", "")),
                    written,
                )
        except (FederationError, aiohttp.ClientError, ValueError) as exc:
            raise RemoteMediaError(str(exc)) from exc

    async def _stream(self, read: Callable[[int], Awaitable[bytes]], max_size: int) -> WrittenFile:
        writer = await self._files.open_writer()
        try:
            while chunk := await read(_CHUNK):
                if writer.size + len(chunk) > max_size:
                    raise RemoteMediaError("the remote media is too large")
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
            raise RemoteMediaError("the metadata part is too large")


def filename_of(disposition: str) -> str | None:
    """The file name in a Content-Disposition header (RFC 6266), if any."""
    match = _FILENAME_STAR.search(disposition)
    if match:
        return unquote(match.group(1).strip())
    match = _FILENAME.search(disposition)
    return match.group(1).strip() if match else None
