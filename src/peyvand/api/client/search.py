"""Client-Server API, "Server Side Search" (search.yaml): ``POST /search``."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.api.validation import Body
from peyvand.errors import Errcode, MatrixError
from peyvand.events.search_text import SEARCH_KEYS
from peyvand.services.rooms.search import EventContext, SearchRequest
from peyvand.services.sync.filtering import parse_event_filter

routes = RouteTable()

_GROUP_KEYS = ("room_id", "sender")


@routes.post(f"{CLIENT_V3}/search", rate_limited=True)
async def search(ctx: RequestContext) -> web.Response:
    """POST /_matrix/client/v3/search?next_batch=...: ``{search_categories: {room_events}}``,
    the only category the spec defines (another alone is 400 ``M_INVALID_PARAM``, as
    Synapse refuses it)."""
    body = await ctx.body()
    categories = Body(body.dict("search_categories"))
    if "room_events" not in categories:
        unknown = ", ".join(sorted(categories.data)) or "none"
        raise MatrixError(Errcode.INVALID_PARAM, f"Unsupported search categories: {unknown}")
    request = _room_events(Body(categories.dict("room_events")))
    next_batch = ctx.query.get("next_batch")
    result = await ctx.services.search.search(ctx.user, request, next_batch)
    return json_response({"search_categories": {"room_events": result}})


def _room_events(criteria: Body) -> SearchRequest:
    """The ``room_events`` criteria, validated."""
    keys = criteria.str_list("keys", list(SEARCH_KEYS))
    for key in keys:
        if key not in SEARCH_KEYS:
            raise MatrixError(
                Errcode.INVALID_PARAM, f"'keys' must be among {', '.join(SEARCH_KEYS)}"
            )
    context = None
    if criteria.data.get("event_context") is not None:
        raw = Body(criteria.dict("event_context"))
        context = EventContext(
            before_limit=raw.int("before_limit", 5, minimum=0),
            after_limit=raw.int("after_limit", 5, minimum=0),
            include_profile=raw.bool("include_profile", False),
        )
    groupings = Body(criteria.dict("groupings", {}))
    group_by = set()
    for group in groupings.list("group_by", []):
        if not isinstance(group, dict):
            raise MatrixError(Errcode.BAD_JSON, "'group_by' must be an array of objects")
        group_by.add(Body(group).one_of("key", _GROUP_KEYS))
    raw_filter = criteria.data.get("filter")
    return SearchRequest(
        search_term=criteria.str("search_term"),
        keys=tuple(dict.fromkeys(keys)),
        order_by=criteria.one_of("order_by", ("rank", "recent"), "rank"),
        event_filter=parse_event_filter(raw_filter if raw_filter is not None else {}),
        event_context=context,
        include_state=criteria.bool("include_state", False),
        group_by=frozenset(group_by),
    )
