"""Fetching media from the server that holds it (Server-Server API, "Content Repository":
``GET /_matrix/federation/v1/media/download/{mediaId}``).

The answer is ``multipart/mixed``: a JSON metadata part, then the content (or, which this
server does not follow, a ``Location`` to fetch it from). Servers without the federation
media endpoints are asked on the deprecated ``/_matrix/media/v3/download`` instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from typing import Final
from urllib.parse import quote, unquote

from peyvand.federation.client import FederationClient, FederationHttpError

_FILENAME_STAR: Final = re.compile(r"filename\*\s*=\s*(?:utf-8|UTF-8)''([^;]+)")
_FILENAME: Final = re.compile(r'filename\s*=\s*"?([^";]+)"?')


@dataclass(frozen=True, slots=True)
class RemoteContent:
    content_type: str
    upload_name: str | None
    data: bytes


class RemoteMediaError(Exception):
    """The media could not be fetched (unknown, too large, unreachable, malformed)."""


class RemoteMediaFetcher:
    def __init__(self, client: FederationClient) -> None:
        self._client = client

    async def fetch(self, origin: str, media_id: str, max_size: int) -> RemoteContent:
        """The content of ``mxc://origin/media_id``, at most ``max_size`` bytes."""
        try:
            _, body, headers = await self._client.get_bytes(
                origin,
                f"/_matrix/federation/v1/media/download/{quote(media_id, safe='')}",
                max_size=max_size + 64 * 1024,
            )
        except FederationHttpError as exc:
            if exc.status not in (400, 404, 405) or exc.errcode == "M_NOT_FOUND":
                raise RemoteMediaError(str(exc)) from exc
            return await self._legacy(origin, media_id, max_size)
        except Exception as exc:
            raise RemoteMediaError(str(exc)) from exc
        content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
        found = parse_multipart_media(content_type, body)
        if len(found.data) > max_size:
            raise RemoteMediaError("the remote media is too large")
        return found

    async def _legacy(self, origin: str, media_id: str, max_size: int) -> RemoteContent:
        path = f"/_matrix/media/v3/download/{quote(origin, safe='')}/{quote(media_id, safe='')}"
        try:
            content_type, body, headers = await self._client.get_bytes(
                origin, path, query={"allow_remote": "false"}, max_size=max_size
            )
        except Exception as exc:
            raise RemoteMediaError(str(exc)) from exc
        disposition = {k.lower(): v for k, v in headers.items()}.get("content-disposition", "")
        return RemoteContent(content_type, filename_of(disposition), body)


def parse_multipart_media(content_type: str, body: bytes) -> RemoteContent:
    """The content part of a federation media answer (RemoteMediaError if malformed)."""
    header = Message()
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/mixed" or not isinstance(boundary, str):
        raise RemoteMediaError(f"expected multipart/mixed, got {content_type!r}")
    delimiter = b"--" + boundary.encode()
    start = body.find(delimiter)
    parts = body[max(start, 0) :].split(b"\r\n" + delimiter)
    # parts[0] starts with the first delimiter; the last part starts with "--" (the end).
    if not parts or not parts[0].startswith(delimiter) or len(parts) < 3:
        raise RemoteMediaError("malformed multipart answer")
    content_part = parts[1]
    head, separator, data = content_part.partition(b"\r\n\r\n")
    if not separator:
        raise RemoteMediaError("malformed content part")
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    if "location" in headers and not data:
        raise RemoteMediaError("the remote server redirects media elsewhere")
    return RemoteContent(
        headers.get("content-type", "application/octet-stream"),
        filename_of(headers.get("content-disposition", "")),
        data,
    )


def filename_of(disposition: str) -> str | None:
    """The file name in a Content-Disposition header (RFC 6266), if any."""
    match = _FILENAME_STAR.search(disposition)
    if match:
        return unquote(match.group(1).strip())
    match = _FILENAME.search(disposition)
    return match.group(1).strip() if match else None
