"""The media an event's content names (``mxc://`` URIs), for purging media with the
events that used them (docs/compliance.md, "Retention").

Client-Server API, "Content repository": messages carry their media in ``url``
(``m.image``, ``m.file``, ``m.audio``, ``m.video``, ``m.sticker``, ``m.room.avatar``) and
``info.thumbnail_url``; encrypted attachments in ``file.url`` and
``info.thumbnail_file.url``; profiles in ``avatar_url``; an edit in its
``m.new_content``. Encrypted events hide theirs in the ciphertext: the server cannot see
them.
"""

from __future__ import annotations

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
