"""What every EDU handler uses: checks on the fields of EDUs from other servers (an EDU,
or part of one, that fails them is ``IgnoredEdu``, logged and dropped by
``FederationEdus.on_edus``, never raised to the sending server) and the sender of EDUs to
other servers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, Protocol

from peyvand.services.sync.streams import MAX_POSITION
from peyvand.types import JsonDict, ServerName, UserID, is_valid_user_id, server_name_of

MAX_ID_LENGTH: Final = 255


class EduSender(Protocol):
    """What is used of ``FederationSender``."""

    async def send_edu(
        self, destination: ServerName, edu_type: str, content: JsonDict, *, durable: bool
    ) -> None: ...

    def send_ephemeral(
        self, destinations: Iterable[ServerName], edu_type: str, content: JsonDict
    ) -> None: ...

    async def send_durable_edus(self, edus: Sequence[tuple[ServerName, str, JsonDict]]) -> None: ...


class IgnoredEdu(Exception):
    """An EDU (or part of one) that is malformed or not the origin's to send."""


def edu_string(value: object, what: str) -> str:
    """A non-empty string of at most ``MAX_ID_LENGTH`` characters."""
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise IgnoredEdu(f"{what} must be a non-empty string of at most {MAX_ID_LENGTH}")
    return value


def edu_position(value: object, what: str) -> int:
    """A non-negative integer a stream position can hold."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_POSITION:
        raise IgnoredEdu(f"{what} must be a non-negative integer")
    return value


def edu_user_of(origin: ServerName, value: object, what: str) -> UserID:
    """A user ID of ``origin``'s."""
    if not isinstance(value, str) or not is_valid_user_id(value):
        raise IgnoredEdu(f"{what} is not a user ID")
    if server_name_of(value) != origin:
        raise IgnoredEdu(f"{what} {value} is not a user of {origin}")
    return UserID(value)
