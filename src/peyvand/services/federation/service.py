"""The Server-Server API's services, one per job, as the federation endpoints reach them
(``Services.federation``), and which servers may talk to this one."""

from __future__ import annotations

from peyvand.errors import Errcode, MatrixError
from peyvand.federation.policy import ServerPolicy
from peyvand.federation.sender import FederationSender
from peyvand.services.federation.edus import FederationEdus
from peyvand.services.federation.inbound_membership import InboundMembership
from peyvand.services.federation.inbound_transactions import InboundTransactions
from peyvand.services.federation.invite_inbox import InviteInbox
from peyvand.services.federation.outbound_membership import OutboundMembership
from peyvand.services.federation.serving import FederationReads
from peyvand.types import ServerName


def allows_server(
    own_server_name: ServerName, policy: ServerPolicy, server_name: ServerName
) -> bool:
    """Whether this server talks to ``server_name``: never to itself, else as the
    federation policy (allowed and denied servers) says."""
    return server_name != own_server_name and policy.allows(server_name)


class FederationService:
    def __init__(
        self,
        server_name: ServerName,
        policy: ServerPolicy,
        sender: FederationSender,
        transactions: InboundTransactions,
        reads: FederationReads,
        inbound_membership: InboundMembership,
        outbound_membership: OutboundMembership,
        invite_inbox: InviteInbox,
        edus: FederationEdus | None,
    ) -> None:
        """``edus`` is None where federation is off (its endpoints then answer 404)."""
        self._server_name = server_name
        self._policy = policy
        self._sender = sender
        self._edus = edus
        self.transactions = transactions
        self.reads = reads
        self.inbound_membership = inbound_membership
        self.outbound_membership = outbound_membership
        self.invite_inbox = invite_inbox

    async def start(self) -> None:
        self.transactions.start()

    async def stop(self) -> None:
        await self.transactions.stop()

    @property
    def edus(self) -> FederationEdus:
        if self._edus is None:
            raise MatrixError(Errcode.UNRECOGNIZED, "Federation is disabled", status=404)
        return self._edus

    def allows(self, server_name: ServerName) -> bool:
        """Whether ``server_name`` may talk to this server (see ``allows_server``)."""
        return allows_server(self._server_name, self._policy, server_name)

    def heard_from(self, origin: ServerName) -> None:
        """A server just talked to us: retry anything queued for it now."""
        self._sender.wake(origin)
