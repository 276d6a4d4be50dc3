"""The internal API between a deployment's processes (issue 21, ``api.internal``) is not
mounted on a server that is one process: 404 M_UNRECOGNIZED, whatever the request
carries (tests/workers/test_forwarded_writes.py tests it in a deployment)."""

from __future__ import annotations

import aiohttp

from harness.server import HomeserverProcess


async def test_one_process_has_no_internal_api(homeserver: HomeserverProcess) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/_peyvand/internal/v1/events/send", "/_peyvand/internal/v1/rooms/create"):
            async with session.post(
                homeserver.base_url + path, json={}, headers={"Authorization": "Bearer x"}
            ) as response:
                assert response.status == 404
                assert (await response.json())["errcode"] == "M_UNRECOGNIZED"
