"""URL previews (Client-Server API, ``GET /_matrix/client/v1/media/preview_url``).

Off unless ``media.url_preview_enabled``. Pages are fetched by ``peyvand.media.preview``,
which refuses private and loopback addresses (unless the operator allowed their network)
and bounds size and time. The preview's image is stored as media, so clients load it
from this server (``og:image`` becomes an ``mxc://`` URI with ``matrix:image:size``); it has
no owner, so it counts against nobody's quota.

A page's answer is bounded (at most 50 ``og:*`` keys, values cut to 1000 characters), and
results are cached for an hour per URL unless larger than 64 KiB. Concurrent requests for
one URL share one fetch, which runs as a task of its own: a client that goes away does not
cancel it for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from peyvand.config import MediaConfig
from peyvand.errors import Errcode, MatrixError
from peyvand.lru import LRU
from peyvand.media.preview import (
    FetchedResource,
    FetchPolicy,
    PreviewError,
    UrlFetcher,
    parse_opengraph,
)
from peyvand.media.thumbnailer import ImageInfo, ImageTooLarge, NotAnImage, probe_image_bytes
from peyvand.services.accounts.requester import Requester
from peyvand.services.media.repository import MediaService

JsonDict = dict[str, Any]

_CACHE_SECONDS: Final = 3600.0
_CACHE_SIZE: Final = 1000
_HTML_TYPES: Final = ("text/html", "application/xhtml+xml")
# Bounds on what one page can make the server keep and send back.
_MAX_OG_KEYS: Final = 50
_MAX_KEY_CHARS: Final = 100
_MAX_VALUE_CHARS: Final = 1000
_MAX_CACHED_BYTES: Final = 64 * 1024


class UrlPreviewService:
    def __init__(
        self,
        config: MediaConfig,
        media: MediaService,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._enabled = config.url_preview_enabled
        self._max_pixels = config.max_thumbnail_pixels
        self._media = media
        self._clock = clock
        self._fetcher = UrlFetcher(
            FetchPolicy(
                allowed_networks=tuple(
                    ipaddress.ip_network(network, strict=False)
                    for network in config.url_preview_allowed_networks
                ),
                max_size=config.url_preview_max_size,
                timeout=config.url_preview_timeout,
            )
        )
        self._cache: LRU[str, tuple[float, JsonDict]] = LRU(_CACHE_SIZE)
        self._running: dict[str, asyncio.Task[JsonDict]] = {}

    async def start(self) -> None:
        if self._enabled:
            await self._fetcher.start()

    async def stop(self) -> None:
        jobs = list(self._running.values())
        for job in jobs:
            job.cancel()
        for job in jobs:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job
        if self._enabled:
            await self._fetcher.close()

    async def preview(self, requester: Requester, url: str) -> JsonDict:
        if not self._enabled:
            raise MatrixError(Errcode.UNRECOGNIZED, "URL previews are disabled", status=404)
        cached = self._cache.get(url)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        job = self._running.get(url)
        if job is None:
            job = asyncio.create_task(self._build_and_cache(url), name="url-preview")
            self._running[url] = job
            job.add_done_callback(functools.partial(self._done, url))
        return await asyncio.shield(job)

    def _done(self, url: str, job: asyncio.Task[JsonDict]) -> None:
        if self._running.get(url) is job:
            del self._running[url]
        if not job.cancelled():
            job.exception()  # retrieved: a fetch nobody waits for any more must not log

    async def _build_and_cache(self, url: str) -> JsonDict:
        result = await self._build(url)
        size = len(json.dumps(result, ensure_ascii=False).encode())
        if size <= _MAX_CACHED_BYTES:
            self._cache.put(url, (self._clock() + _CACHE_SECONDS, result))
        return result

    async def _build(self, url: str) -> JsonDict:
        page = await self._fetch(url)
        if page.content_type.startswith("image/"):
            return await self._image_fields(page) or {}
        if page.content_type not in _HTML_TYPES:
            return {}
        loop = asyncio.get_running_loop()
        parsed = await loop.run_in_executor(
            None, parse_opengraph, page.data, page.charset, page.url
        )
        image_url = parsed.get("og:image")
        og: JsonDict = _bounded({k: v for k, v in parsed.items() if k != "og:image"})
        if isinstance(image_url, str):
            try:
                image = await self._fetch(image_url)
            except MatrixError:
                image = None
            if image is not None:
                og.update(await self._image_fields(image))
        return og

    async def _fetch(self, url: str) -> FetchedResource:
        try:
            return await self._fetcher.fetch(url)
        except PreviewError as exc:
            if exc.kind == "bad_url":
                raise MatrixError(Errcode.INVALID_PARAM, str(exc)) from None
            if exc.kind == "blocked":
                raise MatrixError(Errcode.FORBIDDEN, "IP address blocked") from None
            if exc.kind == "too_large":
                raise MatrixError(Errcode.TOO_LARGE, str(exc), status=502) from None
            raise MatrixError(Errcode.UNKNOWN, str(exc), status=502) from None

    async def _image_fields(self, image: FetchedResource) -> JsonDict:
        """Store a fetched image as media; its OpenGraph fields (empty if not an image)."""
        loop = asyncio.get_running_loop()
        try:
            info: ImageInfo = await loop.run_in_executor(
                None, probe_image_bytes, image.data, self._max_pixels
            )
        except (NotAnImage, ImageTooLarge):
            return {}
        name = Path(image.url.split("?", 1)[0]).name or None
        content_uri = await self._media.store_bytes(image.data, info.content_type, name)
        return {
            "og:image": content_uri,
            "og:image:type": info.content_type,
            "og:image:width": info.width,
            "og:image:height": info.height,
            "matrix:image:size": len(image.data),
        }


def _bounded(og: Mapping[str, object]) -> JsonDict:
    """At most ``_MAX_OG_KEYS`` ``og:*`` keys (of sane length), each string value cut to
    ``_MAX_VALUE_CHARS``: a page cannot make the answer (or the cache) arbitrarily large."""
    bounded: JsonDict = {}
    for key, value in og.items():
        if len(bounded) >= _MAX_OG_KEYS:
            break
        if not key.startswith("og:") or len(key) > _MAX_KEY_CHARS:
            continue
        bounded[key] = value[:_MAX_VALUE_CHARS] if isinstance(value, str) else value
    return bounded
