"""Compliance export (eDiscovery) and personal data export (docs/compliance.md).

``export_room`` and ``export_user_messages`` write, for a time range:

- ``events.jsonl``: one event per line in stream order, in the client format
  (``event_id``, ``room_id``, ``type``, ``sender``, ``origin_server_ts``, ``content``,
  ``state_key`` for state events). The server never sees plaintext: an ``m.room.encrypted``
  event is exported as stored and marked ``"encrypted": true``. A redacted event has its
  redacted content (``{}`` for a message) and ``"redacted": true``;
- ``transcript.html``: the same events, readable (``peyvand.compliance.transcript``);
- ``attachments/<media_id>-<name>``: a copy of every file an exported message refers to
  (``url`` and ``info.thumbnail_url`` of ``m.room.message`` and ``m.sticker``) that this
  server holds; the others are listed in the manifest's ``missing_media``;
- ``manifest.json``, written last: what was exported, by whom, and every other file's
  path, SHA-256 and size (chain of custody; ``verify_manifest`` re-checks them).

``export_personal_data`` writes a user's own data (GDPR): ``profile.json``,
``devices.json`` (never access tokens), ``account_data.json``, ``messages.jsonl``
(everything they sent), ``media.json`` and ``media/`` (their uploads) and the manifest.

Each export is recorded in the audit log (``AuditAction.EXPORT``) with the manifest's
SHA-256, before it is published: an export that could not be recorded is removed. Events
and media rows are read in bounded batches and files copied in chunks, all file I/O in
the executor (``peyvand.compliance.export_files``).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from peyvand.compliance import transcript
from peyvand.compliance.audit import AuditAction, AuditLog
from peyvand.compliance.export_files import (
    ExportError,
    ExportNotFound,
    JsonArrayWriter,
    StagedExport,
    manifest_sha256,
    verify_manifest,
)
from peyvand.events.redaction import redact
from peyvand.events.room_versions import room_version_or_none
from peyvand.media.files import MediaFiles
from peyvand.storage.compliance_reads import (
    ComplianceReads,
    ExportEventRow,
    ExportMediaRow,
    MediaKey,
)
from peyvand.types import JsonDict

__all__ = [
    "ComplianceExporter",
    "ExportError",
    "ExportNotFound",
    "ExportResult",
    "Progress",
    "manifest_sha256",
    "verify_manifest",
]

Progress = Callable[[int, int | None], None]
"""``progress(events_done, events_total)``, called after each batch (total None if unknown)."""

_MESSAGE_TYPES = frozenset({"m.room.message", "m.sticker"})
_UNSAFE = re.compile(r"[^\w.-]+")
_MAX_NAME_BYTES = 120


@dataclass(frozen=True, slots=True)
class ExportResult:
    """Where the export went (a folder or a zip file), the SHA-256 of its manifest (also in
    the audit log, entry ``audit_seq``) and what it holds."""

    path: Path
    manifest_sha256: str
    events: int
    files: int
    media: int
    missing_media: int
    audit_seq: int

    def as_json(self) -> JsonDict:
        return {
            "path": str(self.path),
            "manifest_sha256": self.manifest_sha256,
            "events": self.events,
            "files": self.files,
            "media": self.media,
            "missing_media": self.missing_media,
        }


class ComplianceExporter:
    def __init__(
        self,
        reads: ComplianceReads,
        media_files: MediaFiles,
        audit: AuditLog,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reads = reads
        self._media_files = media_files
        self._audit = audit
        self._clock = clock

    async def export_room(
        self,
        room_id: str,
        since_ts: int | None,
        until_ts: int | None,
        destination: Path,
        *,
        actor: str,
        reason: str | None = None,
        as_zip: bool = False,
        progress: Progress | None = None,
    ) -> ExportResult:
        """The room's events sent from ``since_ts`` to ``until_ts`` (milliseconds,
        both included; None: open),
        with their attachments, to ``destination`` (a new folder, or a zip file)."""
        _check_range(since_ts, until_ts)
        if not await self._reads.room_exists(room_id):
            raise ExportNotFound(f"unknown room {room_id}")
        up_to = await self._reads.max_stream_ordering()
        total = await self._reads.count_room_events(room_id, since_ts, until_ts, up_to)
        return await self._export_events(
            {"kind": "room", "room_id": room_id, "since_ts": since_ts, "until_ts": until_ts},
            room_id,
            self._reads.room_events(room_id, since_ts, until_ts, up_to),
            total,
            destination,
            actor=actor,
            reason=reason,
            as_zip=as_zip,
            progress=progress,
        )

    async def export_user_messages(
        self,
        user_id: str,
        since_ts: int | None,
        until_ts: int | None,
        destination: Path,
        *,
        actor: str,
        reason: str | None = None,
        as_zip: bool = False,
        progress: Progress | None = None,
    ) -> ExportResult:
        """Every event ``user_id`` (local or remote) sent from ``since_ts`` to ``until_ts``, in
        any room this server holds, like ``export_room``."""
        _check_range(since_ts, until_ts)
        up_to = await self._reads.max_stream_ordering()
        total = await self._reads.count_user_events(user_id, since_ts, until_ts, up_to)
        return await self._export_events(
            {"kind": "user", "user_id": user_id, "since_ts": since_ts, "until_ts": until_ts},
            user_id,
            self._reads.user_events(user_id, since_ts, until_ts, up_to),
            total,
            destination,
            actor=actor,
            reason=reason,
            as_zip=as_zip,
            progress=progress,
        )

    async def export_personal_data(
        self,
        user_id: str,
        destination: Path,
        *,
        actor: str,
        reason: str | None = None,
        as_zip: bool = False,
        progress: Progress | None = None,
    ) -> ExportResult:
        """A local user's own data (GDPR, right of access): profile, devices, account
        data, every event they sent and the media they uploaded."""
        profile = await self._reads.profile(user_id)
        if profile is None:
            raise ExportNotFound(f"unknown user {user_id}")
        up_to = await self._reads.max_stream_ordering()
        total = await self._reads.count_user_events(user_id, None, None, up_to)
        created_ts = self._now()
        staged = await StagedExport.create(destination, as_zip=as_zip)
        try:
            await staged.write_file(
                "profile.json",
                _pretty(
                    {
                        "user_id": profile.user_id,
                        "displayname": profile.displayname,
                        "avatar_url": profile.avatar_url,
                        "fields": await self._reads.profile_fields(user_id),
                        "created_ts": profile.created_ts,
                        "is_admin": profile.is_admin,
                        "deactivated": profile.deactivated,
                    }
                ),
            )
            devices = JsonArrayWriter(await staged.open("devices.json"))
            async with aclosing(self._reads.devices(user_id)) as device_batches:
                async for device_batch in device_batches:
                    await devices.write(
                        [
                            {
                                "device_id": d.device_id,
                                "display_name": d.display_name,
                                "last_seen_ts": d.last_seen_ts,
                                "last_seen_ip": d.last_seen_ip,
                            }
                            for d in device_batch
                        ]
                    )
            await staged.close_writer(devices)
            account_data = JsonArrayWriter(await staged.open("account_data.json"))
            async with aclosing(self._reads.account_data(user_id)) as data_batches:
                async for data_batch in data_batches:
                    await account_data.write(
                        [
                            {"room_id": a.room_id or None, "type": a.type, "content": a.content}
                            for a in data_batch
                        ]
                    )
            await staged.close_writer(account_data)

            messages = await staged.open("messages.jsonl")
            done = 0
            _report(progress, done, total)
            async with aclosing(self._reads.user_events(user_id, None, None, up_to)) as batches:
                async for batch in batches:
                    await messages.write(b"".join(_jsonl(export_event(row)) for row in batch))
                    done += len(batch)
                    _report(progress, done, total)
            await staged.close(messages)

            media = _MediaCopier(staged, self._media_files, "media")
            listing = JsonArrayWriter(await staged.open("media.json"))
            async with aclosing(self._reads.media_uploaded_by(user_id)) as media_batches:
                async for media_batch in media_batches:
                    items = []
                    for row in media_batch:
                        uri = f"mxc://{row.origin}/{row.media_id}"
                        path = await media.copy(uri, row, None)
                        items.append(
                            {
                                "uri": uri,
                                "path": path,
                                "content_type": row.content_type,
                                "upload_name": row.upload_name,
                                "size": row.size,
                                "created_ts": row.created_ts,
                            }
                        )
                    await listing.write(items)
            await staged.close_writer(listing)

            manifest: JsonDict = {
                "kind": "personal",
                "user_id": user_id,
                "created_ts": created_ts,
                "exported_by": actor,
                "reason": reason,
                "events": done,
                "files": [entry.as_json() for entry in staged.files],
                "missing_media": media.missing,
            }
            return await self._seal(staged, manifest, user_id, actor, reason, media)
        except BaseException:
            await staged.discard()
            raise

    # -- shared ------------------------------------------------------------------------

    async def _export_events(
        self,
        description: JsonDict,
        target: str,
        batches: AsyncGenerator[list[ExportEventRow], None],
        total: int,
        destination: Path,
        *,
        actor: str,
        reason: str | None,
        as_zip: bool,
        progress: Progress | None,
    ) -> ExportResult:
        created_ts = self._now()
        staged = await StagedExport.create(destination, as_zip=as_zip)
        try:
            events = await staged.open("events.jsonl")
            page = await staged.open("transcript.html")
            facts = {
                "Exported": _utc(created_ts),
                "Exported by": actor,
                "From": _utc_or(description["since_ts"], "the beginning"),
                "Until": _utc_or(description["until_ts"], "the time of export"),
                "Events": str(total),
            }
            if reason:
                facts["Reason"] = reason
            title = f"{'Room' if description['kind'] == 'room' else 'Messages of'} {target}"
            await page.write(transcript.header(title, facts).encode())
            attachments = _MediaCopier(staged, self._media_files, "attachments")
            show_room = description["kind"] != "room"
            done = 0
            _report(progress, done, total)
            async with aclosing(batches) as rows:
                async for batch in rows:
                    exported = [export_event(row) for row in batch]
                    await attachments.copy_referenced(exported, self._reads)
                    await events.write(b"".join(_jsonl(event) for event in exported))
                    await page.write(
                        "".join(
                            transcript.line(event, attachments.links, show_room=show_room)
                            for event in exported
                        ).encode()
                    )
                    done += len(batch)
                    _report(progress, done, total)
            await page.write(transcript.FOOTER.encode())
            await staged.close(events)
            await staged.close(page)
            manifest: JsonDict = {
                **description,
                "created_ts": created_ts,
                "exported_by": actor,
                "reason": reason,
                "events": done,
                "files": [entry.as_json() for entry in staged.files],
                "attachments": [
                    {"uri": uri, "path": path} for uri, path in attachments.links.items()
                ],
                "missing_media": attachments.missing,
            }
            return await self._seal(staged, manifest, target, actor, reason, attachments)
        except BaseException:
            await staged.discard()
            raise

    async def _seal(
        self,
        staged: StagedExport,
        manifest: JsonDict,
        target: str,
        actor: str,
        reason: str | None,
        media: _MediaCopier,
    ) -> ExportResult:
        """Write the manifest, record the export in the audit log, then publish it."""
        digest = await staged.write_manifest(manifest)
        details: JsonDict = {
            key: manifest[key]
            for key in ("kind", "since_ts", "until_ts", "events")
            if key in manifest
        }
        details |= {
            "format": "zip" if staged.destination.suffix == ".zip" else "folder",
            "path": str(staged.destination),
            "files": len(manifest["files"]) + 1,
            "media": len(media.links),
            "missing_media": len(media.missing),
            "manifest_sha256": digest,
        }
        seq = await self._audit.record(
            actor, AuditAction.EXPORT, target, reason=reason, details=details
        )
        path = await staged.publish()
        return ExportResult(
            path=path,
            manifest_sha256=digest,
            events=manifest["events"],
            files=len(manifest["files"]) + 1,
            media=len(media.links),
            missing_media=len(media.missing),
            audit_seq=seq,
        )

    def _now(self) -> int:
        return int(self._clock() * 1000)


def export_event(row: ExportEventRow) -> JsonDict:
    """One line of ``events.jsonl``: the event in the client format, as stored, marked
    ``encrypted`` or ``redacted`` (with the redacted content) where so."""
    content = row.pdu.get("content")
    if not isinstance(content, dict):
        content = {}
    event: JsonDict = {
        "event_id": row.event_id,
        "room_id": row.room_id,
        "type": row.type,
        "sender": row.sender,
        "origin_server_ts": row.origin_server_ts,
        "content": content,
    }
    if row.state_key is not None:
        event["state_key"] = row.state_key
    if row.type == "m.room.redaction":
        redacts = row.pdu.get("redacts", content.get("redacts"))
        if redacts is not None:
            event["redacts"] = redacts
    if row.redacted_by is not None:
        version = room_version_or_none(row.room_version or "")
        event["content"] = redact(row.pdu, version)["content"] if version is not None else {}
        event["redacted"] = True
        event["redacted_by"] = row.redacted_by
    if row.type == "m.room.encrypted":
        event["encrypted"] = True
    return event


def media_references(event: JsonDict) -> list[str]:
    """The ``mxc://`` URIs an exported message refers to (its file and thumbnail)."""
    if event.get("type") not in _MESSAGE_TYPES or event.get("redacted"):
        return []
    content = event["content"]
    found = [content.get("url"), _nested(content, "file", "url")]
    info = content.get("info")
    if isinstance(info, dict):
        found += [info.get("thumbnail_url"), _nested(info, "thumbnail_file", "url")]
    return [uri for uri in found if isinstance(uri, str) and _media_key(uri) is not None]


class _MediaCopier:
    """Copies media files into a folder of the export, once per ``mxc://`` URI; ``links``
    maps each URI copied to its path, ``missing`` lists those that could not be."""

    def __init__(self, staged: StagedExport, media_files: MediaFiles, folder: str) -> None:
        self._staged = staged
        self._media_files = media_files
        self._folder = folder
        self.links: dict[str, str] = {}
        self.missing: list[JsonDict] = []
        self._seen: set[str] = set()
        self._names: set[str] = set()

    async def copy_referenced(self, events: Iterable[JsonDict], reads: ComplianceReads) -> None:
        """Copy the media these events refer to that no earlier batch referred to."""
        wanted: dict[str, str | None] = {}
        for event in events:
            for uri in media_references(event):
                if uri not in self._seen and uri not in wanted:
                    content = event["content"]
                    name = content.get("filename") or content.get("body")
                    wanted[uri] = name if isinstance(name, str) else None
        if not wanted:
            return
        keys = {uri: key for uri in wanted if (key := _media_key(uri)) is not None}
        rows = await reads.media_by_keys(list(keys.values()))
        for uri, name in wanted.items():
            await self.copy(uri, rows.get(keys[uri]), name)

    async def copy(self, uri: str, row: ExportMediaRow | None, name: str | None) -> str | None:
        """Copy the file of ``row`` (the media row of ``uri``); its path in the export, or
        None (and ``uri`` listed as missing) if this server does not hold it."""
        self._seen.add(uri)
        if row is None:
            self.missing.append({"uri": uri, "reason": "not stored on this server"})
            return None
        if row.sha256 is None:
            self.missing.append({"uri": uri, "reason": "upload never completed"})
            return None
        relative = self._name_for(row.media_id, row.upload_name or name)
        entry = await self._staged.copy_in(relative, self._media_files.path_of(row.sha256))
        if entry is None:
            self._names.discard(relative.rpartition("/")[2])
            self.missing.append({"uri": uri, "reason": "file missing from the media store"})
            return None
        self.links[uri] = relative
        if entry.sha256 != row.sha256:
            self.missing.append(
                {"uri": uri, "path": relative, "reason": "stored file does not match its hash"}
            )
        return relative

    def _name_for(self, media_id: str, name: str | None) -> str:
        stem = _safe(media_id) or "media"
        suffix = _safe(name or "")
        base = f"{stem}-{suffix}" if suffix else stem
        candidate, n = base, 1
        while candidate in self._names:
            n += 1
            candidate = f"{base}-{n}"
        self._names.add(candidate)
        return f"{self._folder}/{candidate}"


def _safe(name: str) -> str:
    """``name`` as a file name: letters, digits, ``.``, ``_`` and ``-`` only, no leading
    dot, at most ``_MAX_NAME_BYTES`` bytes of UTF-8."""
    cleaned = _UNSAFE.sub("_", name).strip("._")
    while len(cleaned.encode()) > _MAX_NAME_BYTES:
        cleaned = cleaned[:-1]
    return cleaned


def _media_key(uri: str) -> MediaKey | None:
    if not uri.startswith("mxc://"):
        return None
    origin, _, media_id = uri[len("mxc://") :].partition("/")
    if not origin or not media_id or "/" in media_id:
        return None
    return origin, media_id


def _nested(mapping: JsonDict, *keys: str) -> Any:
    value: Any = mapping
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _check_range(since_ts: int | None, until_ts: int | None) -> None:
    if since_ts is not None and until_ts is not None and since_ts > until_ts:
        raise ExportError("the range is empty: 'since' is after 'until'")


def _report(progress: Progress | None, done: int, total: int | None) -> None:
    if progress is not None:
        progress(done, total)


def _jsonl(event: JsonDict) -> bytes:
    return orjson.dumps(event) + b"\n"


def _pretty(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n"


def _utc(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _utc_or(ts: int | None, default: str) -> str:
    return default if ts is None else _utc(ts)
