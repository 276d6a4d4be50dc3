"""Who is making a request, as established once by central authentication."""

from __future__ import annotations

from dataclasses import dataclass

from peyvand.services.appservice.registration import ApplicationService
from peyvand.types import DeviceID, UserID


@dataclass(frozen=True, slots=True)
class Requester:
    user_id: UserID
    device_id: DeviceID
    # The access token's row id (for logout of this session).
    token_id: int
    is_admin: bool = False
    # A guest account (Client-Server API, "Guest Access").
    is_guest: bool = False
    # Set when the request came with an application service's ``as_token`` (the user is
    # its bot, or a namespace user it acts as with ``?user_id=``).
    appservice: ApplicationService | None = None
