"""The client between a deployment's processes (``federation.worker_client``, issue 21):
the secret as bearer token, another process's Matrix error raised as it answered it
(status, errcode, message, other fields), and a process that does not answer in time or
answers something else as a 503, within the timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from harness.local_http import start_post_site
from harness.ports import free_port
from peyvand.errors import Errcode, MatrixError, ProcessUnreachable
from peyvand.federation.worker_client import WorkerClient

PATH = "/_peyvand/internal/v1/events/send"


async def _answer(request: web.Request) -> web.StreamResponse:
    kind = (await request.json())["kind"]
    if request.headers.get("Authorization") != "Bearer s3cret":
        return web.json_response({"errcode": "M_FORBIDDEN", "error": "no"}, status=403)
    if kind == "ok":
        return web.json_response({"event": {"event_id": "$e"}})
    if kind == "limited":
        body = {"errcode": "M_LIMIT_EXCEEDED", "error": "Too many", "retry_after_ms": 1200}
        return web.json_response(body, status=429)
    if kind == "slow":
        await asyncio.sleep(2)
    return web.Response(text="<html>bad gateway</html>", status=502)


@pytest.fixture
async def url() -> AsyncIterator[str]:
    port = free_port()
    runner = await start_post_site("127.0.0.1", port, PATH, _answer)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_answers_and_errors(url: str) -> None:
    client = WorkerClient(url, "s3cret", timeout=0.5)
    try:
        assert await client.post(PATH, {"kind": "ok"}) == {"event": {"event_id": "$e"}}
        with pytest.raises(MatrixError) as limited:
            await client.post(PATH, {"kind": "limited"})
        assert (limited.value.status, limited.value.to_json()) == (
            429,
            {"errcode": "M_LIMIT_EXCEEDED", "error": "Too many", "retry_after_ms": 1200},
        )
        with pytest.raises(MatrixError) as not_json:
            await client.post(PATH, {"kind": "html"})
        assert (not_json.value.status, not_json.value.errcode) == (503, Errcode.UNKNOWN)
        started = time.monotonic()
        with pytest.raises(MatrixError) as slow:
            await client.post(PATH, {"kind": "slow"})
        assert time.monotonic() - started < 1.5
        assert slow.value.status == 503
    finally:
        await client.stop()
    wrong = WorkerClient(url, "other", timeout=0.5)
    try:
        with pytest.raises(MatrixError) as forbidden:
            await wrong.post(PATH, {"kind": "ok"})
        assert (forbidden.value.status, forbidden.value.errcode) == (403, Errcode.FORBIDDEN)
    finally:
        await wrong.stop()


async def test_an_unreachable_process_is_a_503() -> None:
    """Nothing listens: a 503, known never to have reached the process (it may be asked
    of another: ``ProcessUnreachable``)."""
    client = WorkerClient(f"http://127.0.0.1:{free_port()}", "s3cret", timeout=0.5)
    try:
        with pytest.raises(ProcessUnreachable) as refused:
            await client.post(PATH, {"kind": "ok"})
        assert refused.value.status == 503
    finally:
        await client.stop()
