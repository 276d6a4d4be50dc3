"""Client-Server API, "Push Rules: API" (pushrules.yaml).

Only the ``global`` scope exists. Kinds are checked by the service: an unknown kind is
``M_INVALID_PARAM``, an unknown rule ``M_NOT_FOUND``. Any other path under ``pushrules/``
(no scope, an unknown scope, a missing kind or rule ID, an unknown attribute) is a 400
``M_UNRECOGNIZED``, as Synapse answers: it names no rule, so it is a malformed request
rather than an unknown resource.
"""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.errors import Errcode, MatrixError
from peyvand.events.push_rules.validation import check_kind

routes = RouteTable()

_RULE = f"{CLIENT_V3}/pushrules/global/{{kind}}/{{ruleId}}"


@routes.get(f"{CLIENT_V3}/pushrules/")
async def get_push_rules(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/pushrules/: every ruleset (only ``global``)."""
    return json_response(await ctx.services.push_rules.get_rules_json(ctx.user.user_id))


@routes.get(f"{CLIENT_V3}/pushrules/global/")
async def get_global_push_rules(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/pushrules/global/: the global ruleset."""
    rules = await ctx.services.push_rules.get_rules_json(ctx.user.user_id)
    return json_response(rules["global"])


@routes.get(f"{CLIENT_V3}/pushrules/global/{{kind}}/")
async def get_push_rules_of_kind(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/pushrules/global/{kind}/: the rules of one kind, in order
    (not in the spec; Synapse serves it)."""
    kind = ctx.path["kind"]
    check_kind(kind)
    rules = await ctx.services.push_rules.get_rules_json(ctx.user.user_id)
    return json_response(rules["global"][kind])


@routes.get(_RULE)
async def get_push_rule(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}"""
    rule = await ctx.services.push_rules.get_rule(
        ctx.user.user_id, ctx.path["kind"], ctx.path["ruleId"]
    )
    return json_response(rule.to_json())


@routes.put(_RULE, rate_limited=True)
async def put_push_rule(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}: create or update a
    user-defined rule, optionally placed ``before`` or ``after`` another."""
    body = await ctx.body()
    await ctx.services.push_rules.put_rule(
        ctx.user.user_id,
        ctx.path["kind"],
        ctx.path["ruleId"],
        body.data,
        before=ctx.query.get("before") or None,
        after=ctx.query.get("after") or None,
    )
    return json_response({})


@routes.delete(_RULE)
async def delete_push_rule(ctx: RequestContext) -> web.Response:
    """DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}: user-defined rules only."""
    await ctx.services.push_rules.delete_rule(
        ctx.user.user_id, ctx.path["kind"], ctx.path["ruleId"]
    )
    return json_response({})


@routes.get(f"{_RULE}/enabled")
async def get_push_rule_enabled(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled"""
    rule = await ctx.services.push_rules.get_rule(
        ctx.user.user_id, ctx.path["kind"], ctx.path["ruleId"]
    )
    return json_response({"enabled": rule.enabled})


@routes.put(f"{_RULE}/enabled")
async def put_push_rule_enabled(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled"""
    body = await ctx.body()
    await ctx.services.push_rules.set_enabled(
        ctx.user.user_id, ctx.path["kind"], ctx.path["ruleId"], body.bool("enabled")
    )
    return json_response({})


@routes.get(f"{_RULE}/actions")
async def get_push_rule_actions(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions"""
    rule = await ctx.services.push_rules.get_rule(
        ctx.user.user_id, ctx.path["kind"], ctx.path["ruleId"]
    )
    return json_response({"actions": rule.to_json()["actions"]})


@routes.put(f"{_RULE}/actions")
async def put_push_rule_actions(ctx: RequestContext) -> web.Response:
    """PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions: also for
    server-default rules."""
    body = await ctx.body()
    await ctx.services.push_rules.set_actions(
        ctx.user.user_id, ctx.path["kind"], ctx.path["ruleId"], body.list("actions")
    )
    return json_response({})


# Registered last: aiohttp tries these only when no route above matches the path.
@routes.get(f"{CLIENT_V3}/pushrules/{{path:.*}}")
@routes.put(f"{CLIENT_V3}/pushrules/{{path:.*}}")
@routes.delete(f"{CLIENT_V3}/pushrules/{{path:.*}}")
async def malformed_push_rule_path(ctx: RequestContext) -> web.Response:
    """Any other GET, PUT or DELETE /_matrix/client/v3/pushrules/...: 400 M_UNRECOGNIZED."""
    raise MatrixError(Errcode.UNRECOGNIZED, "Unrecognised push rule path", status=400)
