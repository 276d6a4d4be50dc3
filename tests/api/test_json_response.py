"""``json_response``: the client gets the JSON, and once it is sent the response holds
no body, though aiohttp keeps the response of an idle keep-alive connection until its
next request (issue 15, peak memory)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from harness.local_http import served
from peyvand.api.context import json_response


async def test_a_sent_json_response_holds_no_body() -> None:
    document = {"rooms": {f"!room{n}:example.org": {"events": ["x" * 100] * 10} for n in range(50)}}
    sent: list[web.Response] = []

    async def handler(_: web.Request) -> web.Response:
        response = json_response(document)
        sent.append(response)
        return response

    app = web.Application()
    app.router.add_get("/", handler)
    async with served(app) as url:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(f"{url}/") as reply:
                assert reply.status == 200
                assert reply.content_type == "application/json"
                assert await reply.json() == document
            # The connection stays open (keep-alive), idle: the response is not freed
            # yet, but its body is.
            assert len(sent) == 1
            assert sent[0].body is None
