"""Questions this server asks other servers for its clients (Server-Server API,
"Querying for information": ``/query/profile``; "Public Room Directory":
``/publicRooms``), with errors given to the client as Synapse gives them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from peyvand.errors import Errcode, MatrixError
from peyvand.events.canonical_json import encode_canonical_json
from peyvand.federation.client import FederationError, FederationHttpError
from peyvand.federation.transport import FederationTransport
from peyvand.services.accounts.profile_fields import MAX_PROFILE_BYTES
from peyvand.services.federation.errors import refusal
from peyvand.types import JsonDict, ServerName, UserID, server_name_of

_QUERY_TIMEOUT: Final = 10.0  # seconds: a client waits on the answer
# Fields copied into member events: kept only when they are strings.
MEMBER_FIELDS: Final = ("displayname", "avatar_url")


class RemoteQueries:
    """Typed ``/query/profile`` and ``/publicRooms`` requests to other servers; ``allows``
    says whether this server federates with a server."""

    def __init__(
        self, transport: FederationTransport, allows: Callable[[ServerName], bool]
    ) -> None:
        self._transport = transport
        self._allows = allows

    async def profile(self, user_id: UserID, field: str | None = None) -> JsonDict:
        """GET /query/profile on the user's server: their profile, or only ``field``.
        ``displayname`` and ``avatar_url`` are kept only if strings, other fields as
        they come while the profile is within the spec's 64 KiB. As in Synapse, the
        server's 403 or 404 is passed on; no answer, another error or a malformed answer
        is 502."""
        server = server_name_of(user_id)
        if not self._allows(server):
            raise MatrixError(Errcode.NOT_FOUND, "Profile was not found")
        try:
            answer = await self._transport.query_profile(
                server, user_id, field=field, timeout=_QUERY_TIMEOUT
            )
        except FederationHttpError as exc:
            if exc.status in (403, 404):
                raise refusal(exc) from exc
            raise MatrixError(Errcode.UNKNOWN, "Failed to fetch profile", status=502) from exc
        except FederationError as exc:
            raise MatrixError(Errcode.UNKNOWN, "Failed to fetch profile", status=502) from exc
        if not isinstance(answer, dict):
            raise MatrixError(Errcode.UNKNOWN, "Failed to fetch profile", status=502)
        profile = {
            k: v
            for k, v in answer.items()
            if (field is None or k == field) and (k not in MEMBER_FIELDS or isinstance(v, str))
        }
        if len(encode_canonical_json(profile)) > MAX_PROFILE_BYTES:
            # Over the spec's limit: only what member events need is kept (and cached).
            return {k: v for k, v in profile.items() if k in MEMBER_FIELDS}
        return profile

    async def public_rooms(
        self,
        server: ServerName,
        limit: int | None,
        since: str | None,
        search_filter: JsonDict | None,
        include_all_networks: bool,
        third_party_instance_id: str | None,
    ) -> JsonDict:
        """A page of ``server``'s public room directory: GET /publicRooms, or POST with the
        ``filter`` (as Synapse sends them). A refusal of 403 stays 403; anything else
        that fails is 502 ("Failed to fetch room list", as in Synapse)."""
        if not self._allows(server):
            raise MatrixError(Errcode.FORBIDDEN, f"Federation with {server} is not allowed")
        try:
            if search_filter is not None:
                try:
                    return await self._public_rooms_page(
                        server,
                        limit,
                        since,
                        search_filter,
                        include_all_networks,
                        third_party_instance_id,
                    )
                except FederationHttpError as exc:
                    if not _filter_unsupported(exc):
                        raise
                # A server without filtering over federation: its whole list, filtered
                # here, without pagination (as Synapse falls back).
                page = await self._public_rooms_page(
                    server, None, None, None, include_all_networks, third_party_instance_id
                )
                return {"chunk": [e for e in page["chunk"] if _matches(e, search_filter)]}
            return await self._public_rooms_page(
                server, limit, since, None, include_all_networks, third_party_instance_id
            )
        except FederationHttpError as exc:
            if exc.status == 403:
                raise MatrixError(
                    Errcode.FORBIDDEN,
                    f"You are not allowed to view the public rooms list of {server}",
                ) from exc
            raise MatrixError(Errcode.UNKNOWN, "Failed to fetch room list", status=502) from exc
        except FederationError as exc:
            raise MatrixError(Errcode.UNKNOWN, "Failed to fetch room list", status=502) from exc

    async def _public_rooms_page(
        self,
        server: ServerName,
        limit: int | None,
        since: str | None,
        search_filter: JsonDict | None,
        include_all_networks: bool,
        third_party_instance_id: str | None,
    ) -> JsonDict:
        """One request for a page: POST with a filter, GET without."""
        answer = await self._transport.public_rooms(
            server,
            limit=limit,
            since=since,
            search_filter=search_filter,
            include_all_networks=include_all_networks,
            third_party_instance_id=third_party_instance_id,
            timeout=_QUERY_TIMEOUT,
        )
        if not isinstance(answer, dict) or not isinstance(answer.get("chunk"), list):
            raise MatrixError(Errcode.UNKNOWN, "Failed to fetch room list", status=502)
        return _room_list(answer)


def _filter_unsupported(exc: FederationHttpError) -> bool:
    """The server does not take a filter over federation (MSC2197): 404, 405 or
    ``M_UNRECOGNIZED`` / ``M_NOT_FOUND``, as Synapse decides."""
    return exc.status in (404, 405) or exc.errcode in (
        Errcode.UNRECOGNIZED.value,
        Errcode.NOT_FOUND.value,
    )


def _matches(entry: JsonDict, search_filter: JsonDict) -> bool:
    """An entry of another server's list against the client's filter (room types, then
    the search term in the name, topic or canonical alias, ignoring case)."""
    room_types = search_filter.get("room_types")
    if isinstance(room_types, list) and entry.get("room_type") not in room_types:
        return False
    term = search_filter.get("generic_search_term")
    if not isinstance(term, str) or not term:
        return True
    term = term.lower()
    return any(
        isinstance(entry.get(key), str) and term in entry[key].lower()
        for key in ("name", "topic", "canonical_alias")
    )


def _room_list(answer: JsonDict) -> JsonDict:
    """Another server's room list page as it is given to clients: entries that are
    objects with a string ``room_id``, the tokens and estimate if well-typed."""
    result: JsonDict = {
        "chunk": [
            entry
            for entry in answer["chunk"]
            if isinstance(entry, dict) and isinstance(entry.get("room_id"), str)
        ]
    }
    for key in ("next_batch", "prev_batch"):
        if isinstance(answer.get(key), str):
            result[key] = answer[key]
    estimate = answer.get("total_room_count_estimate")
    if isinstance(estimate, int) and not isinstance(estimate, bool):
        result["total_room_count_estimate"] = estimate
    return result
