"""The media repository, its URL previews, and (federation on) other servers' media."""

from __future__ import annotations

from dataclasses import dataclass

from peyvand.config import Config
from peyvand.media.files import MediaFiles
from peyvand.services.media.remote import RemoteMediaFetcher
from peyvand.services.media.remote_cache import no_remote_media
from peyvand.services.media.repository import MediaService
from peyvand.services.media.url_preview import UrlPreviewService
from peyvand.storage.database import Database
from peyvand.storage.media import MediaStore
from peyvand.wiring.federation import Transport


@dataclass(frozen=True, slots=True)
class Media:
    files: MediaFiles
    media: MediaService
    url_preview: UrlPreviewService


def build_media(config: Config, db: Database, transport: Transport) -> Media:
    files = MediaFiles(config.media_dir)
    media = MediaService(
        config.server_name,
        config.media,
        MediaStore(db),
        files,
        remote_fetch=(
            RemoteMediaFetcher(transport.requests, files).fetch
            if config.federation.enabled
            else no_remote_media
        ),
        admin_contact=config.admin_contact,
    )
    return Media(files, media, UrlPreviewService(config.media, media))
