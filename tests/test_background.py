"""peyvand.background: a periodic job survives a failing pass and stops cleanly."""

from __future__ import annotations

import asyncio

import pytest

from peyvand.background import BackgroundTask, periodic


async def test_periodic_job_runs_again_after_a_failing_pass(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    third = asyncio.Event()

    async def job() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("first pass fails")
        if len(calls) == 3:
            third.set()

    task = periodic("test-job", 0.01, job, run_at_start=True)
    task.start()
    await asyncio.wait_for(third.wait(), 5)
    await task.stop()
    assert not task.running
    assert calls[:3] == [0, 1, 2]
    assert "periodic job test-job failed" in caplog.text


async def test_stop_cancels_a_running_task_and_start_is_idempotent() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def run() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = BackgroundTask("sleeper", run)
    task.start()
    task.start()
    await asyncio.wait_for(started.wait(), 5)
    assert task.running
    await task.stop()
    assert cancelled.is_set()
    assert not task.running
    await task.stop()


async def test_periodic_waits_one_interval_before_the_first_pass() -> None:
    calls = 0

    async def job() -> None:
        nonlocal calls
        calls += 1

    task = periodic("later", 3600, job)
    task.start()
    await asyncio.sleep(0.05)
    await task.stop()
    assert calls == 0
