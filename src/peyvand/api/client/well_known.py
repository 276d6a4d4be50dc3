"""Discovery files and the landing page: ``/.well-known/matrix/client`` (Client-Server API,
"Server Discovery", wellknown.yaml), ``/.well-known/matrix/server`` (Server-Server API,
"Resolving server names", step 3: delegation), ``/.well-known/matrix/support``
(Client-Server API, "Server support discovery", support.yaml) and ``/``.

The well-known files are meant to be fetched from ``https://<server_name's host>/``: served
here, they work when that host routes to Peyvand (its federation listener, or a reverse
proxy in front of the client port)."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from peyvand.api.context import RequestContext, json_response
from peyvand.api.routing import RouteTable
from peyvand.config.model import SupportContact
from peyvand.errors import Errcode, MatrixError
from peyvand.types import JsonDict

routes = RouteTable()

_LANDING_PAGE: Final = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Peyvand is running</title></head>
<body>
<h1>Peyvand is running</h1>
<p>This is a <a href="https://matrix.org">Matrix</a> homeserver. Use a Matrix client to
sign in.</p>
</body>
</html>
"""


@routes.get("/.well-known/matrix/client", auth="none")
async def well_known_client(ctx: RequestContext) -> web.Response:
    """GET /.well-known/matrix/client: where clients find this homeserver."""
    return json_response({"m.homeserver": {"base_url": ctx.services.config.base_url}})


@routes.get("/.well-known/matrix/server", auth="none")
async def well_known_server(ctx: RequestContext) -> web.Response:
    """GET /.well-known/matrix/server: the delegated server name (``m.server``, a hostname
    with an optional port) other servers connect to; 404 when none is configured, as
    Synapse when ``serve_server_wellknown`` is off."""
    delegated = ctx.services.config.well_known.server
    if delegated is None:
        raise MatrixError(Errcode.NOT_FOUND, "No server delegation is configured")
    return json_response({"m.server": delegated})


@routes.get("/.well-known/matrix/support", auth="none")
async def well_known_support(ctx: RequestContext) -> web.Response:
    """GET /.well-known/matrix/support: administrator contacts and a support page; 404
    without either (support.yaml: "No server support information available")."""
    config = ctx.services.config.well_known
    if not config.support_contacts and config.support_page is None:
        raise MatrixError(Errcode.NOT_FOUND, "No support information is configured")
    body: JsonDict = {}
    if config.support_contacts:
        body["contacts"] = [_contact(contact) for contact in config.support_contacts]
    if config.support_page is not None:
        body["support_page"] = config.support_page
    return json_response(body)


def _contact(contact: SupportContact) -> JsonDict:
    fields = {
        "matrix_id": contact.matrix_id,
        "email_address": contact.email_address,
        "role": contact.role,
    }
    return {key: value for key, value in fields.items() if value is not None}


@routes.get("/", auth="none")
async def landing_page(ctx: RequestContext) -> web.Response:
    """GET /: a plain page saying that the server runs (Synapse serves one too)."""
    return web.Response(text=_LANDING_PAGE, content_type="text/html")


routes.route("HEAD", "/", auth="none")(landing_page)
