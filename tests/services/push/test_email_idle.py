"""The email pass does no work per idle pusher: one found with nothing to send is looked
at again only once its user is in a room with a later event (in process, counting the
store's calls)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from email.message import EmailMessage
from typing import Any, cast

from peyvand.config.model import EmailConfig
from peyvand.services.push.email.mailer import EmailMailer
from peyvand.storage.notifications import Notification, NotificationStore
from peyvand.storage.pushers import DeliveryState, PusherRow
from peyvand.types import RoomID, UserID

USERS = [UserID(f"@u{i}:test") for i in range(5)]


class Notifications(NotificationStore):
    def __init__(self) -> None:
        self.listed: list[UserID] = []
        self.asked: list[tuple[set[UserID], int, int]] = []
        self.active: set[UserID] = set()

    async def notifications_for_user(self, user_id: UserID, **kwargs: Any) -> list[Notification]:
        self.listed.append(user_id)
        return []

    async def users_with_events(
        self, user_ids: Collection[UserID], after: int, up_to: int
    ) -> set[UserID]:
        self.asked.append((set(user_ids), after, up_to))
        return self.active & set(user_ids)

    async def read_positions(
        self, user_id: UserID, room_ids: Sequence[RoomID]
    ) -> dict[tuple[RoomID, str], int]:
        return {}


class Pushers:
    async def get_deliveries(
        self, kind: str, user_ids: Sequence[UserID] | None = None
    ) -> list[DeliveryState]:
        return [
            DeliveryState(
                PusherRow(u, "m.email", f"{u}@mail", None, "email", "", "", None, "en", {}, 0),
                0,
                None,
            )
            for u in USERS
        ]

    async def set_delivered(
        self, progress: Sequence[tuple[PusherRow, int, int | None]]
    ) -> list[bool]:
        return [True for _ in progress]


class Sender:
    async def send(self, message: EmailMessage) -> None:
        raise AssertionError("nothing to send")


async def test_idle_pushers_are_not_looked_at_until_their_users_have_events() -> None:
    notifications = Notifications()
    newest = [10]

    async def ignored(user_id: UserID) -> frozenset[UserID]:
        return frozenset()

    mailer = EmailMailer(
        EmailConfig(),
        Pushers(),
        notifications,
        cast(Any, None),
        ignored,
        Sender(),
        cast(Any, None),
        lambda: newest[0],
    )
    await mailer.run_once()
    assert sorted(notifications.listed) == sorted(USERS)
    notifications.listed.clear()
    # Nothing happened since: no work per pusher, no query.
    await mailer.run_once()
    assert notifications.listed == [] and notifications.asked == []
    # Events that concern only u1: one query for the idle pushers, then u1 alone.
    newest[0] = 20
    notifications.active = {USERS[1]}
    await mailer.run_once()
    assert notifications.asked == [(set(USERS), 10, 20)]
    assert notifications.listed == [USERS[1]]
    notifications.listed.clear()
    notifications.active = set()
    newest[0] = 30
    await mailer.run_once()
    assert notifications.asked[-1] == (set(USERS), 20, 30)
    assert notifications.listed == []
