"""The Python of a real server a test needs (Synapse, Sygnal): the test is skipped when that
server is not installed on a developer's machine, and fails under CI (``CI`` set), where
``scripts/test`` installs it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest


def require_installed(name: str, find: Callable[[], Path], missing: type[Exception]) -> Path:
    """``find()``, or skip the test (fail it under CI) when it raises ``missing``."""
    try:
        return find()
    except missing as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required under CI: {exc}")
        pytest.skip(str(exc))
