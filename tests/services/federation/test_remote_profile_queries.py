"""``RemoteQueries.profile``: what another server's ``/query/profile`` answer becomes
(custom fields kept, mistyped display names and avatars dropped, a profile over the
spec's 64 KiB cut to what member events need, ``field=`` sent and honoured)."""

from __future__ import annotations

from typing import Any, cast

from peyvand.federation.transport import FederationTransport
from peyvand.services.federation.queries import RemoteQueries
from peyvand.types import ServerName, UserID

USER = UserID("@bob:remote.test")


class _Transport:
    """Answers every profile query with ``answer``; records the fields asked for."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.fields: list[str | None] = []

    async def query_profile(
        self,
        destination: ServerName,
        user_id: UserID,
        *,
        field: str | None = None,
        timeout: float,  # noqa: ASYNC109 (the transport's signature)
    ) -> Any:
        assert destination == "remote.test" and user_id == USER
        self.fields.append(field)
        return self.answer


def _queries(answer: Any) -> tuple[RemoteQueries, _Transport]:
    transport = _Transport(answer)
    return RemoteQueries(cast(FederationTransport, transport), lambda server: True), transport


async def test_custom_fields_are_kept_and_mistyped_member_fields_dropped() -> None:
    queries, transport = _queries(
        {"displayname": 5, "avatar_url": "mxc://remote.test/a", "org.example.x": {"y": [1]}}
    )
    assert await queries.profile(USER) == {
        "avatar_url": "mxc://remote.test/a",
        "org.example.x": {"y": [1]},
    }
    assert await queries.profile(USER, "org.example.x") == {"org.example.x": {"y": [1]}}
    assert transport.fields == [None, "org.example.x"]


async def test_a_profile_over_64_kib_keeps_only_the_member_fields() -> None:
    queries, _ = _queries(
        {"displayname": "Bob", "org.example.big": "x" * 70_000, "org.example.small": 1}
    )
    assert await queries.profile(USER) == {"displayname": "Bob"}
    assert await queries.profile(USER, "org.example.big") == {}
