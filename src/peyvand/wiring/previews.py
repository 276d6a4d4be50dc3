"""Jump to date, room previews and space hierarchies: services that read local rooms
and, where this server lacks a room's history or is not in it, ask other servers (the
transport's requests, or nothing while federation is off)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from peyvand.config import Config
from peyvand.services.federation.service import allows_server
from peyvand.services.rooms.hierarchy import SpaceHierarchyService
from peyvand.services.rooms.remote_hierarchy import RemoteHierarchies
from peyvand.services.rooms.room_summary import RoomSummaryService
from peyvand.services.rooms.timestamp_lookup import TimestampLookup
from peyvand.storage.database import Database
from peyvand.storage.event_timestamps import EventTimestampStore
from peyvand.wiring.federation import Federation, Transport
from peyvand.wiring.local import Local, Timeline
from peyvand.wiring.rooms import Rooms


@dataclass(frozen=True, slots=True)
class Previews:
    timestamp_lookup: TimestampLookup
    room_summary: RoomSummaryService
    space_hierarchy: SpaceHierarchyService


def build_previews(
    config: Config,
    db: Database,
    timeline: Timeline,
    local: Local,
    transport: Transport,
    federation: Federation,
    rooms: Rooms,
) -> Previews:
    server_name = config.server_name
    remote = transport.requests if config.federation.enabled else None
    allows = functools.partial(allows_server, server_name, transport.policy)
    remote_hierarchies = RemoteHierarchies(server_name, remote, allows)
    room_summary = RoomSummaryService(
        server_name,
        timeline.state,
        timeline.index,
        rooms.directory.get_alias,
        remote_hierarchies,
    )
    return Previews(
        timestamp_lookup=TimestampLookup(
            server_name,
            EventTimestampStore(db),
            timeline.event_store,
            timeline.state,
            local.visibility,
            rooms.room_events.world_readable,
            federation.remote.backfill,
            remote=remote,
            allows=allows,
            access=federation.access,
        ),
        room_summary=room_summary,
        space_hierarchy=SpaceHierarchyService(
            server_name, room_summary, remote_hierarchies, federation.access
        ),
    )
