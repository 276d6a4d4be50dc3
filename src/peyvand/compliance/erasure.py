"""Account deactivation, with erasure when asked (docs/compliance.md, "Erasure").

Client-Server API, "Account deactivation" (``erase``) and GDPR Article 17. Deactivating
an account logs it out everywhere and makes it leave (or decline) every room, as Synapse
does; it also deletes the account's OpenID tokens (Synapse lets them run out, up to an
hour), so no third party learns the user ID through one afterwards. Erasing it also
deletes its profile (display name, avatar, custom fields), every media item it uploaded
(unless an event still stored names it) and the content of every event it sent: those
stay in their rooms as redacted events (``HistoryPurger.rewrite``), so the rooms' history
and DAG stay whole. A legal hold on the user keeps the profile, the media uploaded and
the events sent in the hold's range; a hold on a room keeps the user's events there, with
the media they name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from peyvand.compliance.purge import DeleteMedia, HeldCheck, HistoryPurger, PurgeCount
from peyvand.errors import MatrixError, not_found
from peyvand.services.accounts.auth import AuthService
from peyvand.services.rooms.membership import MembershipService
from peyvand.storage.accounts import AccountStore
from peyvand.storage.events import EventStore
from peyvand.storage.purge import PurgeCandidate, PurgeStore
from peyvand.storage.remote_invites import RemoteInviteStore
from peyvand.types import EventID, RoomID, UserID

__all__ = ["AccountErasure", "ErasureReport"]

logger = logging.getLogger(__name__)

_BATCH = 500


@dataclass(slots=True)
class ErasureReport:
    rooms_left: int = 0
    erased: bool = False
    profile_kept: bool = False
    events: PurgeCount = field(default_factory=PurgeCount)
    media_deleted: int = 0
    media_held: int = 0


class AccountErasure:
    def __init__(
        self,
        auth: AuthService,
        membership: MembershipService,
        accounts: AccountStore,
        event_store: EventStore,
        remote_invites: RemoteInviteStore,
        store: PurgeStore,
        purger: HistoryPurger,
        held: HeldCheck,
        user_held: Callable[[UserID], Awaitable[bool]],
        delete_media: DeleteMedia,
        delete_profile_fields: Callable[[UserID], Awaitable[None]],
        delete_openid_tokens: Callable[[UserID], Awaitable[None]],
    ) -> None:
        """``delete_profile_fields`` deletes the custom fields of a profile,
        ``delete_openid_tokens`` a user's OpenID tokens."""
        self._auth = auth
        self._membership = membership
        self._accounts = accounts
        self._event_store = event_store
        self._remote_invites = remote_invites
        self._store = store
        self._purger = purger
        self._held = held
        self._user_held = user_held
        self._delete_media = delete_media
        self._delete_profile_fields = delete_profile_fields
        self._delete_openid_tokens = delete_openid_tokens

    async def deactivate(self, user_id: UserID, *, erase: bool) -> ErasureReport:
        """Deactivate ``user_id`` (a local account; 404 ``M_NOT_FOUND`` if there is no
        such account) and, with ``erase``, erase it."""
        if await self._accounts.get_user(user_id) is None:
            raise not_found("User not found")
        report = ErasureReport(erased=erase)
        await self._auth.deactivate(user_id)
        await self._delete_openid_tokens(user_id)
        report.rooms_left = await self._leave_rooms(user_id)
        if not erase:
            return report
        # Invites from other servers to rooms this server is not in (declined above)
        # are stored as their servers sent them, often with the invitee's profile.
        await self._remote_invites.delete_all_for(user_id)
        report.profile_kept = await self._user_held(user_id)
        if not report.profile_kept:
            await self._accounts.set_displayname(user_id, None)
            await self._accounts.set_avatar_url(user_id, None)
            await self._delete_profile_fields(user_id)
        # Events first: the media their held events name are kept with them.
        # What they sent, and the membership events others sent about them (an invite
        # carries the invitee's profile).
        for source in (self._store.sent_by, self._store.member_events_about):
            after: int | None = None
            while True:
                batch = await source(user_id, after, _BATCH)
                if not batch:
                    break
                report.events.add(await self._purger.rewrite(batch))
                after = batch[-1].stream_ordering
                await asyncio.sleep(0)
        report.media_deleted, report.media_held = await self._erase_media(user_id)
        await self._store.release_space()
        return report

    async def _leave_rooms(self, user_id: UserID) -> int:
        """Leave every room, decline every invite (from this server or another, message
        requests included) and withdraw every knock; how many."""
        memberships = {
            **await self._remote_invites.memberships_of(user_id),
            **{i.room_id: ("invite", 0) for i in await self._remote_invites.held_for(user_id)},
            **await self._event_store.get_memberships_for_user(user_id),
        }
        left = 0
        for room_id, (membership, _) in sorted(memberships.items()):
            if membership not in ("join", "invite", "knock"):
                continue
            try:
                await self._membership.leave(RoomID(room_id), user_id)
                left += 1
            except MatrixError as exc:
                logger.warning("deactivated %s could not leave %s: %s", user_id, room_id, exc)
        return left

    async def _erase_media(self, user_id: UserID) -> tuple[int, int]:
        """Delete what ``user_id`` uploaded, except what a user hold covers (by upload
        time) and what an event still stored names: a held event of theirs, the room's
        current state (an avatar they set), another user's message (a forwarded image).
        ``(deleted, kept)``."""
        uploaded = await self._store.media_uploaded_by(user_id)
        probes = [_probe(user_id, f"mxc://{o}/{m}", ts) for o, m, ts in uploaded]
        held = await self._held(probes) if probes else set()
        named = await self._store.named_by_events([(o, m) for o, m, _ in uploaded])
        doomed = [
            (o, m) for o, m, _ in uploaded if f"mxc://{o}/{m}" not in held and (o, m) not in named
        ]
        deleted = await self._delete_media(doomed) if doomed else 0
        return deleted, len(uploaded) - len(doomed)


def _probe(user_id: UserID, name: str, ts: int) -> PurgeCandidate:
    """A stand-in "event" for asking whether a user hold covers media uploaded at ``ts``:
    user holds match by sender and time, and the room is none."""
    return PurgeCandidate(EventID(name), "", user_id, ts, 0)
