"""URL previews (Client-Server API, ``GET /_matrix/client/v1/media/preview_url``).

Off unless ``media.url_preview_enabled``. Pages are fetched by ``peyvand.media.preview``,
which refuses private and loopback addresses (unless the operator allowed their network)
and bounds size and time. The preview's image is stored as media, so clients load it
from this server (``og:image`` becomes an ``mxc://`` URI with ``matrix:image:size``).
Results are cached for an hour per URL, and concurrent requests for one URL share a fetch.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from peyvand.config import MediaConfig
from peyvand.errors import Errcode, MatrixError
from peyvand.media.preview import (
    FetchedResource,
    FetchPolicy,
    PreviewError,
    UrlFetcher,
    parse_opengraph,
)
from peyvand.media.thumbnailer import ImageInfo, ImageTooLarge, NotAnImage, probe_image_bytes
from peyvand.services.lru import LRU
from peyvand.services.media import MediaService
from peyvand.services.requester import Requester

JsonDict = dict[str, Any]

_CACHE_SECONDS: Final = 3600.0
_CACHE_SIZE: Final = 1000
_HTML_TYPES: Final = ("text/html", "application/xhtml+xml")


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
        self._running: dict[str, asyncio.Future[JsonDict]] = {}

    async def start(self) -> None:
        if self._enabled:
            await self._fetcher.start()

    async def stop(self) -> None:
        if self._enabled:
            await self._fetcher.close()

    async def preview(self, requester: Requester, url: str) -> JsonDict:
        if not self._enabled:
            raise MatrixError(Errcode.UNRECOGNIZED, "URL previews are disabled", status=404)
        cached = self._cache.get(url)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        running = self._running.get(url)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[JsonDict] = asyncio.get_running_loop().create_future()
        self._running[url] = future
        try:
            result = await self._build(requester, url)
            self._cache.put(url, (self._clock() + _CACHE_SECONDS, result))
            future.set_result(result)
            return result
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()
            raise
        finally:
            del self._running[url]

    async def _build(self, requester: Requester, url: str) -> JsonDict:
        page = await self._fetch(url)
        if page.content_type.startswith("image/"):
            return await self._image_fields(requester, page) or {}
        if page.content_type not in _HTML_TYPES:
            return {}
        loop = asyncio.get_running_loop()
        og: JsonDict = dict(
            await loop.run_in_executor(None, parse_opengraph, page.data, page.charset, page.url)
        )
        image_url = og.pop("og:image", None)
        if isinstance(image_url, str):
            try:
                image = await self._fetch(image_url)
            except MatrixError:
                image = None
            if image is not None:
                og.update(await self._image_fields(requester, image))
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

    async def _image_fields(self, requester: Requester, image: FetchedResource) -> JsonDict:
        """Store a fetched image as media; its OpenGraph fields (empty if not an image)."""
        loop = asyncio.get_running_loop()
        try:
            info: ImageInfo = await loop.run_in_executor(
                None, probe_image_bytes, image.data, self._max_pixels
            )
        except (NotAnImage, ImageTooLarge):
            return {}
        name = Path(image.url.split("?", 1)[0]).name or None
        content_uri = await self._media.store_bytes(
            requester.user_id, image.data, info.content_type, name
        )
        return {
            "og:image": content_uri,
            "og:image:type": info.content_type,
            "og:image:width": info.width,
            "og:image:height": info.height,
            "matrix:image:size": len(image.data),
        }
