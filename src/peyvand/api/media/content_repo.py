"""Content repository endpoints (content-repo.yaml, authed-content-repo.yaml).

Uploads stream their body to the media service; downloads stream the stored file with
HTTP Range support. Served media carries the spec's restrictive Content-Security-Policy
and a Content-Disposition that is ``inline`` only for the spec's safe types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final
from urllib.parse import quote

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.api.validation import query_bool, query_int
from peyvand.errors import Errcode, MatrixError
from peyvand.services.media.downloads import Download
from peyvand.types import ServerName

routes = RouteTable()

_LEGACY = "/_matrix/media/v3"
_AUTHED = "/_matrix/client/v1/media"

# Content repository, "Security considerations": the recommended policy.
_CSP: Final = (
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
    "style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"
)

# "Serving inline content": the only types served with Content-Disposition: inline.
INLINE_CONTENT_TYPES: Final = frozenset(
    {
        "text/css",
        "text/plain",
        "text/csv",
        "application/json",
        "application/ld+json",
        "image/jpeg",
        "image/gif",
        "image/png",
        "image/apng",
        "image/webp",
        "image/avif",
        "video/mp4",
        "video/webm",
        "video/ogg",
        "video/quicktime",
        "audio/mp4",
        "audio/webm",
        "audio/aac",
        "audio/mpeg",
        "audio/ogg",
        "audio/wave",
        "audio/wav",
        "audio/x-wav",
        "audio/x-pn-wav",
        "audio/flac",
        "audio/x-flac",
    }
)

_CHUNK_SIZE: Final = 256 * 1024


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; a client that goes away mid-upload is an error the
    service turns into "nothing stored"."""
    try:
        async for chunk in request.content.iter_any():
            yield chunk
    except (ConnectionError, HttpProcessingError) as exc:
        raise MatrixError(Errcode.UNKNOWN, "The upload was interrupted") from exc


def _upload_args(ctx: RequestContext) -> tuple[int | None, str | None, str | None]:
    request = ctx.request
    return request.content_length, request.headers.get("Content-Type"), ctx.query.get("filename")


@routes.post(f"{_LEGACY}/upload", rate_limited=True)
@routes.post("/_matrix/media/r0/upload", rate_limited=True)
async def upload(ctx: RequestContext) -> web.Response:
    """POST /_matrix/media/v3/upload: upload content, get its ``mxc://`` URI."""
    media = ctx.services.media
    content_length, content_type, filename = _upload_args(ctx)
    media.check_declared_size(content_length)
    content_uri = await media.upload(
        ctx.user,
        _body(ctx.request),
        content_length=content_length,
        content_type=content_type,
        upload_name=filename,
    )
    return json_response({"content_uri": content_uri})


@routes.post("/_matrix/media/v1/create", rate_limited=True)
async def create(ctx: RequestContext) -> web.Response:
    """POST /_matrix/media/v1/create: reserve an ``mxc://`` URI for a later upload."""
    created = await ctx.services.media.create(ctx.user)
    return json_response(
        {"content_uri": created.content_uri, "unused_expires_at": created.unused_expires_at}
    )


@routes.put(f"{_LEGACY}/upload/{{server_name}}/{{media_id}}", rate_limited=True)
async def upload_to(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/media/v3/upload/{serverName}/{mediaId}: content for a reserved URI."""
    media = ctx.services.media
    content_length, content_type, filename = _upload_args(ctx)
    media.check_declared_size(content_length)
    await media.upload_to(
        ctx.user,
        ServerName(ctx.path["server_name"]),
        ctx.path["media_id"],
        _body(ctx.request),
        content_length=content_length,
        content_type=content_type,
        upload_name=filename,
    )
    return json_response({})


@routes.get(f"{_AUTHED}/download/{{server_name}}/{{media_id}}")
@routes.get(f"{_AUTHED}/download/{{server_name}}/{{media_id}}/{{file_name}}")
async def download(ctx: RequestContext) -> web.StreamResponse:
    """GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]."""
    return await _download(ctx, authenticated=True)


@routes.get(f"{_LEGACY}/download/{{server_name}}/{{media_id}}", auth="none")
@routes.get(f"{_LEGACY}/download/{{server_name}}/{{media_id}}/{{file_name}}", auth="none")
async def legacy_download(ctx: RequestContext) -> web.StreamResponse:
    """GET /_matrix/media/v3/download/...: deprecated; only media from before the freeze."""
    return await _download(ctx, authenticated=False)


async def _download(ctx: RequestContext, *, authenticated: bool) -> web.StreamResponse:
    found = await ctx.services.media.download(
        ServerName(ctx.path["server_name"]),
        ctx.path["media_id"],
        timeout_ms=_timeout_ms(ctx),
        authenticated=authenticated,
    )
    return _serve(found, ctx.path.get("file_name") or found.upload_name)


# Rate-limited, unlike downloads: a new size or method can cost an image decode.
@routes.get(f"{_AUTHED}/thumbnail/{{server_name}}/{{media_id}}", rate_limited=True)
async def thumbnail(ctx: RequestContext) -> web.StreamResponse:
    """GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}."""
    return await _thumbnail(ctx, authenticated=True)


@routes.get(f"{_LEGACY}/thumbnail/{{server_name}}/{{media_id}}", auth="none", rate_limited=True)
async def legacy_thumbnail(ctx: RequestContext) -> web.StreamResponse:
    """GET /_matrix/media/v3/thumbnail/...: deprecated; only media from before the freeze."""
    return await _thumbnail(ctx, authenticated=False)


async def _thumbnail(ctx: RequestContext, *, authenticated: bool) -> web.StreamResponse:
    query = ctx.query
    for name in ("width", "height"):
        if name not in query:
            raise MatrixError(Errcode.MISSING_PARAM, f"Missing '{name}' query parameter")
    found = await ctx.services.media.thumbnail(
        ServerName(ctx.path["server_name"]),
        ctx.path["media_id"],
        width=query_int(query, "width", 0, minimum=1),
        height=query_int(query, "height", 0, minimum=1),
        method=query.get("method", "scale"),
        animated=query_bool(query, "animated", False),
        timeout_ms=_timeout_ms(ctx),
        authenticated=authenticated,
    )
    return _serve(found, None)


@routes.get(f"{_AUTHED}/config")
@routes.get(f"{_LEGACY}/config")
async def config(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v1/media/config: the upload size limit."""
    return json_response(ctx.services.media.config_json())


@routes.get(f"{_AUTHED}/preview_url", rate_limited=True)
@routes.get(f"{_LEGACY}/preview_url", rate_limited=True)
async def preview_url(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v1/media/preview_url: OpenGraph data for a URL (off by default)."""
    url = ctx.query.get("url")
    if not url:
        raise MatrixError(Errcode.MISSING_PARAM, "Missing 'url' query parameter")
    query_int(ctx.query, "ts", 0)
    return json_response(await ctx.services.url_preview.preview(ctx.user, url))


def _timeout_ms(ctx: RequestContext) -> int | None:
    if "timeout_ms" not in ctx.query:
        return None
    return query_int(ctx.query, "timeout_ms", 0)


def _serve(found: Download, file_name: str | None) -> web.FileResponse:
    """The file, streamed in chunks (sendfile where possible), with Range support."""
    content_type = found.content_type
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type.startswith("text/") and "charset" not in content_type.lower():
        content_type += "; charset=utf-8"
    return web.FileResponse(
        found.path,
        chunk_size=_CHUNK_SIZE,
        headers={
            "Content-Type": content_type,
            "Content-Disposition": content_disposition(media_type, file_name),
            "Content-Security-Policy": _CSP,
            "Cross-Origin-Resource-Policy": "cross-origin",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, max-age=86400",
        },
    )


def content_disposition(media_type: str, file_name: str | None) -> str:
    """``inline`` for the safe types, else ``attachment``; the file name per RFC 6266."""
    kind = "inline" if media_type in INLINE_CONTENT_TYPES else "attachment"
    if not file_name:
        return kind
    if file_name.isascii() and file_name.isprintable() and not any(c in file_name for c in '"\\'):
        return f'{kind}; filename="{file_name}"'
    return f"{kind}; filename*=utf-8''{quote(file_name, safe='')}"
