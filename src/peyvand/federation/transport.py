"""Every request this server makes to another server (Server-Server API), one typed method
per endpoint: the only place a ``/_matrix/federation``, ``/_matrix/key`` or
``/_matrix/media`` URL is written.

Requests go through the signed ``FederationClient`` (discovery, policy, ``X-Matrix``
signatures, bounded bodies and times); path parameters are percent-encoded here, each on
its own. Failures raise the client's ``FederationError`` family (``FederationHttpError``
for a non-2xx answer); a remote media download raises ``MediaDownloadError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final, TypeVar
from urllib.parse import quote

import aiohttp

from peyvand.federation.client import FederationClient, FederationError, FederationHttpError
from peyvand.federation.media import (
    MediaDownloadError,
    OpenWriter,
    RemoteMedia,
    read_multipart,
    read_plain,
)
from peyvand.types import EventID, JsonDict, RoomAlias, RoomID, ServerName, UserID

FEDERATION_V1: Final = "/_matrix/federation/v1"
FEDERATION_V2: Final = "/_matrix/federation/v2"
KEY_SERVER_PATH: Final = "/_matrix/key/v2/server"
KEY_QUERY_PATH: Final = "/_matrix/key/v2/query"
MEDIA_DOWNLOAD_TIMEOUT: Final = 300.0  # seconds for a whole remote media download

T = TypeVar("T")


def _segment(value: str) -> str:
    """One path parameter, percent-encoded (``/`` too)."""
    return quote(value, safe="")


class FederationTransport:
    """Typed Server-Server requests over ``client``."""

    def __init__(self, client: FederationClient) -> None:
        self._client = client

    # --- Transactions -----------------------------------------------------------------------

    async def send_transaction(
        self,
        destination: ServerName,
        txn_id: str,
        body: JsonDict,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (bounds resolution too)
    ) -> Any:
        """``PUT /_matrix/federation/v1/send/{txnId}``: the JSON answer
        (``{"pdus": {event_id: {"error"?}}}``)."""
        path = f"{FEDERATION_V1}/send/{_segment(txn_id)}"
        return await self._client.put_json(destination, path, body, timeout=timeout)

    # --- Server keys ("Retrieving server keys") ---------------------------------------------

    async def get_server_keys(self, server: ServerName) -> Any:
        """``GET /_matrix/key/v2/server`` on ``server`` itself, unsigned: its key document."""
        return await self._client.get_json(server, KEY_SERVER_PATH, signed=False)

    async def query_server_keys(self, notary: ServerName, body: JsonDict) -> Any:
        """``POST /_matrix/key/v2/query`` to a notary, unsigned: ``{"server_keys": [...]}``."""
        return await self._client.post_json(notary, KEY_QUERY_PATH, body, signed=False)

    # --- Joining, leaving, knocking, inviting -----------------------------------------------

    async def make_join(
        self, destination: ServerName, room_id: RoomID, user_id: UserID, versions: Iterable[str]
    ) -> Any:
        """``GET /_matrix/federation/v1/make_join/{roomId}/{userId}?ver=...``: the template."""
        path = f"{FEDERATION_V1}/make_join/{_segment(room_id)}/{_segment(user_id)}"
        return await self._client.get_json(destination, path, query={"ver": list(versions)})

    async def send_join(
        self,
        destination: ServerName,
        room_id: RoomID,
        event_id: EventID,
        pdu: JsonDict,
        *,
        omit_members: bool = False,
    ) -> Any:
        """``PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}``: the room's state
        and auth chain (and the join, signed by the resident server if restricted). With
        ``omit_members`` (``?omit_members=true``) the resident server may leave out member
        events (``members_omitted``) and answers with ``servers_in_room``."""
        path = f"{FEDERATION_V2}/send_join/{_segment(room_id)}/{_segment(event_id)}"
        query = {"omit_members": "true"} if omit_members else None
        return await self._client.put_json(destination, path, pdu, query=query)

    async def make_leave(self, destination: ServerName, room_id: RoomID, user_id: UserID) -> Any:
        """``GET /_matrix/federation/v1/make_leave/{roomId}/{userId}``: the template."""
        path = f"{FEDERATION_V1}/make_leave/{_segment(room_id)}/{_segment(user_id)}"
        return await self._client.get_json(destination, path)

    async def send_leave(
        self, destination: ServerName, room_id: RoomID, event_id: EventID, pdu: JsonDict
    ) -> Any:
        """``PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}``."""
        path = f"{FEDERATION_V2}/send_leave/{_segment(room_id)}/{_segment(event_id)}"
        return await self._client.put_json(destination, path, pdu)

    async def make_knock(
        self, destination: ServerName, room_id: RoomID, user_id: UserID, versions: Iterable[str]
    ) -> Any:
        """``GET /_matrix/federation/v1/make_knock/{roomId}/{userId}?ver=...``: the
        template and its ``room_version``."""
        path = f"{FEDERATION_V1}/make_knock/{_segment(room_id)}/{_segment(user_id)}"
        return await self._client.get_json(destination, path, query={"ver": list(versions)})

    async def send_knock(
        self, destination: ServerName, room_id: RoomID, event_id: EventID, pdu: JsonDict
    ) -> Any:
        """``PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}``: the room's
        ``knock_room_state``."""
        path = f"{FEDERATION_V1}/send_knock/{_segment(room_id)}/{_segment(event_id)}"
        return await self._client.put_json(destination, path, pdu)

    async def invite(
        self, destination: ServerName, room_id: RoomID, event_id: EventID, body: JsonDict
    ) -> Any:
        """``PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`` (``event``,
        ``room_version``, ``invite_room_state``): the invite countersigned."""
        path = f"{FEDERATION_V2}/invite/{_segment(room_id)}/{_segment(event_id)}"
        return await self._client.put_json(destination, path, body)

    # --- Queries ----------------------------------------------------------------------------

    async def query_directory(self, destination: ServerName, alias: RoomAlias) -> Any:
        """``GET /_matrix/federation/v1/query/directory?room_alias=...``."""
        return await self._client.get_json(
            destination, f"{FEDERATION_V1}/query/directory", query={"room_alias": alias}
        )

    async def query_profile(
        self,
        destination: ServerName,
        user_id: UserID,
        *,
        field: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (bounds resolution too)
    ) -> Any:
        """``GET /_matrix/federation/v1/query/profile?user_id=...[&field=...]``."""
        query = {"user_id": user_id} if field is None else {"user_id": user_id, "field": field}
        return await self._client.get_json(
            destination, f"{FEDERATION_V1}/query/profile", query=query, timeout=timeout
        )

    async def public_rooms(
        self,
        destination: ServerName,
        *,
        limit: int | None,
        since: str | None,
        search_filter: JsonDict | None,
        include_all_networks: bool,
        third_party_instance_id: str | None,
        timeout: float | None = None,  # noqa: ASYNC109 (bounds resolution too)
    ) -> Any:
        """A page of ``destination``'s public room directory, as Synapse asks for it:
        ``POST /_matrix/federation/v1/publicRooms`` with a ``filter``, ``GET`` without."""
        path = f"{FEDERATION_V1}/publicRooms"
        if search_filter is not None:
            body: JsonDict = {"include_all_networks": include_all_networks}
            if third_party_instance_id is not None:
                body["third_party_instance_id"] = third_party_instance_id
            if limit:
                body["limit"] = limit
            if since is not None:
                body["since"] = since
            body["filter"] = search_filter
            return await self._client.post_json(destination, path, body, timeout=timeout)
        query: dict[str, str] = {
            "include_all_networks": "true" if include_all_networks else "false"
        }
        if third_party_instance_id is not None:
            query["third_party_instance_id"] = third_party_instance_id
        if limit:
            query["limit"] = str(limit)
        if since is not None:
            query["since"] = since
        return await self._client.get_json(destination, path, query=query, timeout=timeout)

    async def timestamp_to_event(
        self, destination: ServerName, room_id: RoomID, timestamp: int, direction: str
    ) -> Any:
        """``GET /_matrix/federation/v1/timestamp_to_event/{roomId}?ts=...&dir=f|b``:
        ``{"event_id", "origin_server_ts"}`` of the destination's closest event."""
        return await self._client.get_json(
            destination,
            f"{FEDERATION_V1}/timestamp_to_event/{_segment(room_id)}",
            query={"ts": str(timestamp), "dir": direction},
        )

    async def get_hierarchy(
        self, destination: ServerName, room_id: RoomID, *, suggested_only: bool
    ) -> Any:
        """``GET /_matrix/federation/v1/hierarchy/{roomId}?suggested_only=...``: the
        room's summary (``room``) and its children's."""
        return await self._client.get_json(
            destination,
            f"{FEDERATION_V1}/hierarchy/{_segment(room_id)}",
            query={"suggested_only": "true" if suggested_only else "false"},
        )

    # --- End-to-end encryption --------------------------------------------------------------

    async def get_user_devices(
        self,
        destination: ServerName,
        user_id: UserID,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (bounds resolution too)
    ) -> Any:
        """``GET /_matrix/federation/v1/user/devices/{userId}``: the user's devices."""
        path = f"{FEDERATION_V1}/user/devices/{_segment(user_id)}"
        return await self._client.get_json(destination, path, timeout=timeout)

    async def claim_keys(
        self,
        destination: ServerName,
        body: JsonDict,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (bounds resolution too)
    ) -> Any:
        """``POST /_matrix/federation/v1/user/keys/claim`` (``{"one_time_keys": ...}``)."""
        path = f"{FEDERATION_V1}/user/keys/claim"
        return await self._client.post_json(destination, path, body, timeout=timeout)

    # --- Fetching events (the ``RemoteEvents`` of received events) --------------------------

    async def get_event(self, destination: ServerName, event_id: EventID) -> Any:
        """``GET /_matrix/federation/v1/event/{eventId}``: the one PDU (ValueError if the
        answer holds another number of them)."""
        response = await self._client.get_json(
            destination, f"{FEDERATION_V1}/event/{_segment(event_id)}"
        )
        pdus = response.get("pdus") if isinstance(response, dict) else None
        if not isinstance(pdus, list) or len(pdus) != 1:
            raise ValueError("expected one PDU")
        return pdus[0]

    async def get_missing_events(
        self,
        destination: ServerName,
        room_id: RoomID,
        earliest: Sequence[EventID],
        latest: Sequence[EventID],
        limit: int,
        min_depth: int,
    ) -> list[Any]:
        """``POST /_matrix/federation/v1/get_missing_events/{roomId}``: the events (none
        if the answer has no list)."""
        response = await self._client.post_json(
            destination,
            f"{FEDERATION_V1}/get_missing_events/{_segment(room_id)}",
            {
                "earliest_events": list(earliest),
                "latest_events": list(latest),
                "limit": limit,
                "min_depth": min_depth,
            },
        )
        events = response.get("events") if isinstance(response, dict) else None
        return events if isinstance(events, list) else []

    async def backfill(
        self, destination: ServerName, room_id: RoomID, event_ids: Sequence[EventID], limit: int
    ) -> list[Any]:
        """``GET /_matrix/federation/v1/backfill/{roomId}?v=...&limit=...``: the PDUs
        (none if the answer has no list)."""
        response = await self._client.get_json(
            destination,
            f"{FEDERATION_V1}/backfill/{_segment(room_id)}",
            query={"v": list(event_ids), "limit": str(limit)},
        )
        pdus = response.get("pdus") if isinstance(response, dict) else None
        return pdus if isinstance(pdus, list) else []

    async def get_state_ids(
        self, destination: ServerName, room_id: RoomID, event_id: EventID
    ) -> tuple[list[EventID], list[EventID]]:
        """``GET /_matrix/federation/v1/state_ids/{roomId}?event_id=...``: the state's
        event IDs and its auth chain's (ValueError if the answer lacks either list)."""
        response = await self._client.get_json(
            destination,
            f"{FEDERATION_V1}/state_ids/{_segment(room_id)}",
            query={"event_id": event_id},
        )
        if not isinstance(response, dict):
            raise ValueError("bad /state_ids answer")
        pdu_ids = response.get("pdu_ids")
        auth_ids = response.get("auth_chain_ids")
        if not isinstance(pdu_ids, list) or not isinstance(auth_ids, list):
            raise ValueError("bad /state_ids answer")
        return (
            [EventID(e) for e in pdu_ids if isinstance(e, str)],
            [EventID(e) for e in auth_ids if isinstance(e, str)],
        )

    async def get_state(
        self, destination: ServerName, room_id: RoomID, event_id: EventID
    ) -> tuple[list[Any], list[Any]]:
        """``GET /_matrix/federation/v1/state/{roomId}?event_id=...``: the PDUs of the
        state before the event and of its auth chain (ValueError if either list is
        missing)."""
        response = await self._client.get_json(
            destination,
            f"{FEDERATION_V1}/state/{_segment(room_id)}",
            query={"event_id": event_id},
        )
        if not isinstance(response, dict):
            raise ValueError("bad /state answer")
        pdus = response.get("pdus")
        chain = response.get("auth_chain")
        if not isinstance(pdus, list) or not isinstance(chain, list):
            raise ValueError("bad /state answer")
        return pdus, chain

    # --- Content repository -----------------------------------------------------------------

    async def download_media(
        self, origin: ServerName, media_id: str, max_size: int, open_writer: OpenWriter[T]
    ) -> RemoteMedia[T]:
        """``mxc://origin/media_id``, at most ``max_size`` bytes, streamed into a writer
        from ``open_writer``: ``GET /_matrix/federation/v1/media/download/{mediaId}``, or
        the deprecated ``GET /_matrix/media/v3/download/{serverName}/{mediaId}`` when
        ``origin`` answers 400, 404 or 405 without ``M_NOT_FOUND`` (it has no federation
        media endpoints). Anything that fails raises ``MediaDownloadError``."""
        path = f"{FEDERATION_V1}/media/download/{_segment(media_id)}"
        try:
            async with self._client.open_get(origin, path, timeout=MEDIA_DOWNLOAD_TIMEOUT) as resp:
                return await read_multipart(resp, max_size, open_writer)
        except FederationHttpError as exc:
            if exc.status not in (400, 404, 405) or exc.errcode == "M_NOT_FOUND":
                raise MediaDownloadError(str(exc)) from exc
        except (FederationError, aiohttp.ClientError, ValueError) as exc:
            raise MediaDownloadError(str(exc)) from exc
        return await self._download_legacy_media(origin, media_id, max_size, open_writer)

    async def _download_legacy_media(
        self, origin: ServerName, media_id: str, max_size: int, open_writer: OpenWriter[T]
    ) -> RemoteMedia[T]:
        path = f"/_matrix/media/v3/download/{_segment(origin)}/{_segment(media_id)}"
        try:
            async with self._client.open_get(
                origin, path, query={"allow_remote": "false"}, timeout=MEDIA_DOWNLOAD_TIMEOUT
            ) as resp:
                return await read_plain(resp, max_size, open_writer)
        except (FederationError, aiohttp.ClientError, ValueError) as exc:
            raise MediaDownloadError(str(exc)) from exc
