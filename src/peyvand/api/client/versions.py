"""Client-Server API "API Standards" (versions.yaml) and "Capabilities negotiation"
(capabilities.yaml); the well-known files are in ``well_known``."""

from __future__ import annotations

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import CLIENT_V3, RouteTable
from peyvand.events.room_versions import DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS

routes = RouteTable()

# The specification versions served; r0.x are listed for older clients, as Synapse does.
SPEC_VERSIONS = (
    "r0.5.0",
    "r0.6.0",
    "r0.6.1",
    *(f"v1.{minor}" for minor in range(1, 13)),
)

# MSC4186, simplified sliding sync (``api/client/sliding_sync.py``).
UNSTABLE_FEATURES = {"org.matrix.simplified_msc3575": True}


@routes.get("/_matrix/client/versions", auth="none")
async def versions(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/versions: supported spec versions and unstable features.

    Nothing here depends on the user, so any access token is ignored: a client holding a
    stale token can still discover the server."""
    return json_response(
        {"versions": list(SPEC_VERSIONS), "unstable_features": dict(UNSTABLE_FEATURES)}
    )


@routes.get(f"{CLIENT_V3}/capabilities")
async def capabilities(ctx: RequestContext) -> web.Response:
    """GET /_matrix/client/v3/capabilities: what this server lets the user change.

    ``m.profile_fields`` (v1.16): every profile field may be set, as in Synapse; the
    deprecated ``m.set_displayname`` and ``m.set_avatar_url`` say the same."""
    return json_response(
        {
            "capabilities": {
                "m.change_password": {"enabled": True},
                "m.room_versions": {
                    "default": DEFAULT_ROOM_VERSION.identifier,
                    "available": {version: "stable" for version in KNOWN_ROOM_VERSIONS},
                },
                "m.set_displayname": {"enabled": True},
                "m.set_avatar_url": {"enabled": True},
                "m.profile_fields": {"enabled": True},
                # Email addresses can be added when the server can mail the link.
                "m.3pid_changes": {"enabled": ctx.services.config.email.smtp_host is not None},
            }
        }
    )
