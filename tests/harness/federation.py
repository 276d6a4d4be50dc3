"""Two federating servers as one federation test sees them (``tests/federation``'s
``pair`` fixture)."""

from __future__ import annotations

from dataclasses import dataclass

from harness.client import Account, MatrixClient
from harness.server import HomeserverProcess
from harness.synapse import SynapseProcess


@dataclass(frozen=True)
class Pair:
    """Peyvand and its peer, each with a client and a user of its own."""

    peyvand: HomeserverProcess
    peyvand_client: MatrixClient
    peer: SynapseProcess | HomeserverProcess
    peer_client: MatrixClient
    alice: Account
    bob: Account

    def unpack(
        self,
    ) -> tuple[
        HomeserverProcess,
        MatrixClient,
        SynapseProcess | HomeserverProcess,
        MatrixClient,
        Account,
        Account,
    ]:
        """``(peyvand, peyvand_client, peer, peer_client, alice, bob)``."""
        return (
            self.peyvand,
            self.peyvand_client,
            self.peer,
            self.peer_client,
            self.alice,
            self.bob,
        )
