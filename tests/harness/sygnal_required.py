"""Sygnal's Python for a test that needs a real push gateway: the test is skipped when
Sygnal is not installed on a developer's machine, and fails under CI (``CI`` set), where
``scripts/test`` installs it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.sygnal import SygnalUnavailable, sygnal_python


def require_sygnal_python() -> Path:
    try:
        return sygnal_python()
    except SygnalUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Sygnal is required under CI: {exc}")
        pytest.skip(str(exc))
