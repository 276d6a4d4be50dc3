"""Interconnect opt-in: which invites from other servers reach a user (docs/compliance.md,
"Interconnect opt-in").

Each user chooses, or gets the server's default (``interconnect.default_invite_policy``):

- ``open``: invites from other servers are shown as usual;
- ``local-only``: they are refused, the inviting server getting 403 ``M_INVITE_BLOCKED``;
- ``hold-remote``: they are accepted but kept as *message requests*, out of ``/sync`` and
  the user's rooms, until the user accepts one (or opts in with ``open``).

On top of that, the spec's invite permission module (Client-Server API, "Invite
permission"): a user whose ``m.invite_permission_config`` account data has
``default_action: block`` gets no invites from other servers at all (403
``M_INVITE_BLOCKED``), whatever their policy. Invites from users of this server are
ordinary room events and are not affected here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from peyvand.config.model import INVITE_POLICIES, InterconnectConfig
from peyvand.errors import Errcode, MatrixError
from peyvand.events.serialize import invite_stripped_state
from peyvand.services.sync.account_data import AccountDataService
from peyvand.storage.account_data import GLOBAL
from peyvand.storage.remote_invites import InvitePolicyStore, RemoteInvite, RemoteInviteStore
from peyvand.types import JsonDict, RoomID, UserID

__all__ = ["INVITE_POLICIES", "InvitePolicyService", "request_json"]

# Client-Server API, "Invite permission".
INVITE_PERMISSION_CONFIG = "m.invite_permission_config"


def request_json(invite: RemoteInvite) -> JsonDict:
    """A message request as listed to its user: the room, who invited, when (the invite's
    ``origin_server_ts``) and the stripped state the inviting server sent, as /sync would
    show it."""
    events = invite_stripped_state(invite.invite_state, invite.user_id, invite.pdu, invite.sender)
    ts = invite.pdu.get("origin_server_ts")
    return {
        "room_id": invite.room_id,
        "inviter": invite.sender,
        "event_id": invite.event_id,
        "ts": ts if isinstance(ts, int) else None,
        "invite_state": {"events": events},
    }


class InvitePolicyService:
    def __init__(
        self,
        config: InterconnectConfig,
        policies: InvitePolicyStore,
        invites: RemoteInviteStore,
        account_data: AccountDataService,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._policies = policies
        self._invites = invites
        self._account_data = account_data
        self._clock = clock

    @property
    def config(self) -> InterconnectConfig:
        """The server's interconnect settings (invite limits too)."""
        return self._config

    @property
    def default_policy(self) -> str:
        return self._config.default_invite_policy

    async def policy_of(self, user_id: UserID) -> str:
        """The user's own choice, or the server's default."""
        chosen = await self._policies.get(user_id)
        return chosen if chosen in INVITE_POLICIES else self.default_policy

    async def set_policy(self, user_id: UserID, policy: str) -> None:
        """Record the user's choice. Opting in (``open``) does not release the held
        invites by itself: ``InviteInbox.release_invites`` does."""
        if policy not in INVITE_POLICIES:
            raise MatrixError(
                Errcode.INVALID_PARAM, f"'policy' must be one of {', '.join(INVITE_POLICIES)}"
            )
        await self._policies.set(user_id, policy, int(self._clock() * 1000))

    async def blocks_all_invites(self, user_id: UserID) -> bool:
        """The user's ``m.invite_permission_config`` says ``default_action: block`` (any
        other value, or none, means invites as normal)."""
        content = await self._account_data.get_server_managed(
            user_id, RoomID(GLOBAL), INVITE_PERMISSION_CONFIG
        )
        return content is not None and content.get("default_action") == "block"

    async def admit_remote_invite(self, user_id: UserID, room_id: RoomID) -> bool:
        """Whether an invite of ``user_id`` from another server, to ``room_id``, is to be
        held as a message request (True) or shown (False); 403 ``M_INVITE_BLOCKED`` if
        it is refused."""
        if await self.blocks_all_invites(user_id):
            raise MatrixError(Errcode.INVITE_BLOCKED, "The user does not accept invites")
        policy = await self.policy_of(user_id)
        if policy == "local-only":
            raise MatrixError(
                Errcode.INVITE_BLOCKED, "The user does not accept invites from other servers"
            )
        if policy == "open":
            return False
        existing = await self._invites.get(room_id, user_id)
        if existing is not None and existing.membership == "invite":
            # Invited again: an invite the user sees stays visible, a request stays one.
            return existing.held
        if await self._invites.count_held(user_id) >= self._config.max_pending_requests_per_user:
            raise MatrixError(
                Errcode.INVITE_BLOCKED, "The user has too many unanswered message requests"
            )
        return True

    async def requests(self, user_id: UserID) -> Sequence[RemoteInvite]:
        """The user's open message requests, oldest first."""
        return await self._invites.held_for(user_id)

    async def request(self, user_id: UserID, room_id: RoomID) -> RemoteInvite:
        """The user's open message request for ``room_id``; 404 if there is none."""
        invite = await self._invites.get(room_id, user_id)
        if invite is None or not invite.held or invite.membership != "invite":
            raise MatrixError(Errcode.NOT_FOUND, "No message request for this room")
        return invite
