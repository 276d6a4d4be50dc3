"""The media an event's content names (``mxc://`` URIs), for purging media with the
events that used them (docs/compliance.md, "Retention").

Client-Server API, "Content repository": messages carry their media in ``url``
(``m.image``, ``m.file``, ``m.audio``, ``m.video``, ``m.sticker``, ``m.room.avatar``) and
``info.thumbnail_url``; encrypted attachments in ``file.url`` and
``info.thumbnail_file.url``; profiles in ``avatar_url``; an edit in its
``m.new_content``; HTML bodies in ``<img src="mxc://...">`` (``formatted_body``); image
packs (``im.ponies.*`` state and account data, MSC2545) in ``images.*.url`` and
``pack.avatar_url``. Encrypted events hide theirs in the ciphertext: the server cannot
see them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MediaRef", "media_references"]

MediaRef = tuple[str, str]  # (origin, media_id)

_PATHS: tuple[tuple[str, ...], ...] = (
    ("url",),
    ("info", "thumbnail_url"),
    ("file", "url"),
    ("info", "thumbnail_file", "url"),
    ("avatar_url",),
    ("pack", "avatar_url"),
)
# Server name (hostname, IPv4, [IPv6], optional port) and media ID, as in an HTML body.
_MXC_IN_TEXT = re.compile(
    r"mxc://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?/([A-Za-z0-9_-]+)"
)


def media_references(content: Mapping[str, Any]) -> set[MediaRef]:
    """The ``(origin, media_id)`` of every well-formed ``mxc://`` URI ``content`` names."""
    found: set[MediaRef] = set()
    new_content = content.get("m.new_content")
    for body in (content, new_content) if isinstance(new_content, Mapping) else (content,):
        for path in _PATHS:
            ref = _parse_mxc(_get(body, path))
            if ref is not None:
                found.add(ref)
        images = body.get("images")
        if isinstance(images, Mapping):
            for image in images.values():
                ref = _parse_mxc(image.get("url")) if isinstance(image, Mapping) else None
                if ref is not None:
                    found.add(ref)
        html = body.get("formatted_body")
        if isinstance(html, str) and "mxc://" in html:
            for match in _MXC_IN_TEXT.finditer(html):
                found.add((match.group(1) + (match.group(2) or ""), match.group(3)))
    return found


def _get(body: Mapping[str, Any], path: tuple[str, ...]) -> object:
    value: object = body
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _parse_mxc(uri: object) -> MediaRef | None:
    if not isinstance(uri, str) or not uri.startswith("mxc://"):
        return None
    origin, slash, media_id = uri[len("mxc://") :].partition("/")
    if not origin or not slash or not media_id:
        return None
    return origin, media_id
