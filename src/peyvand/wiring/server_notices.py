"""Server notices: the system user's rooms with each user (``[server_notices]``),
built over the rooms' services."""

from __future__ import annotations

from peyvand.config import Config
from peyvand.services.rooms.server_notices import ServerNoticesService
from peyvand.storage.database import Database
from peyvand.storage.local_users import LocalUserStore
from peyvand.wiring.local import Local, Timeline
from peyvand.wiring.rooms import Rooms


def build_server_notices(
    config: Config, db: Database, timeline: Timeline, local: Local, rooms: Rooms
) -> ServerNoticesService:
    return ServerNoticesService(
        config.server_name,
        config.server_notices,
        local.accounts,
        LocalUserStore(db),
        timeline.index,
        timeline.state,
        rooms.rooms,
        rooms.membership,
        local.account_data,
        timeline.events,
    )
