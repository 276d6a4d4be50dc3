"""The parameters of a public room list request, read the same way for clients
(Client-Server API, "Listing rooms") and for other servers (Server-Server API, "Public
Room Directory"): ``limit`` (0 means no limit, as in Synapse), ``since``, ``filter``
(``generic_search_term``, ``room_types``), ``include_all_networks`` and
``third_party_instance_id`` (which lists: the two together are refused, as Synapse
refuses them, and an instance ID must be ``{appservice ID}|{network ID}``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peyvand.api.validation import Body, query_bool, query_int
from peyvand.errors import Errcode, MatrixError
from peyvand.services.rooms.directory import PublicRoomsQuery, parse_instance_id


def _networks(include_all_networks: bool, instance_id: str | None) -> tuple[bool, str | None]:
    if include_all_networks and instance_id is not None:
        raise MatrixError(
            Errcode.INVALID_PARAM, "Can't use include_all_networks with an explicit network"
        )
    if instance_id is not None:
        parse_instance_id(instance_id)
    return include_all_networks, instance_id


def query_from_params(params: Mapping[str, str], *, federated_only: bool) -> PublicRoomsQuery:
    """From a GET request's query string."""
    include_all_networks, instance_id = _networks(
        query_bool(params, "include_all_networks", False),
        params.get("third_party_instance_id") or None,
    )
    return PublicRoomsQuery(
        limit=query_int(params, "limit", 0) or None,
        since=params.get("since") or None,
        include_all_networks=include_all_networks,
        third_party_instance_id=instance_id,
        federated_only=federated_only,
    )


def query_from_body(body: Body, *, federated_only: bool) -> PublicRoomsQuery:
    """From a POST request's body."""
    search = Body(body.dict("filter", {}))
    room_types: list[Any] | None = search.list("room_types", None)
    if room_types is not None and not all(t is None or isinstance(t, str) for t in room_types):
        raise MatrixError(Errcode.BAD_JSON, "'room_types' must be an array of strings or null")
    limit = body.int("limit", None)
    if limit is not None and limit < 0:
        raise MatrixError(Errcode.INVALID_PARAM, "'limit' must not be negative")
    instance = body.data.get("third_party_instance_id")
    include_all_networks, instance_id = _networks(
        # Read leniently, as Synapse does.
        body.data.get("include_all_networks") is True,
        instance if isinstance(instance, str) else None,
    )
    return PublicRoomsQuery(
        limit=limit or None,
        since=body.str("since", None),
        search_term=search.str("generic_search_term", None),
        room_types=room_types,
        include_all_networks=include_all_networks,
        third_party_instance_id=instance_id,
        federated_only=federated_only,
    )
