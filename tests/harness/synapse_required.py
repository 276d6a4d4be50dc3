"""Synapse's Python for a test that needs a real Synapse: the test is skipped when Synapse
is not installed on a developer's machine, and fails under CI (``CI`` set), where it must be."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.synapse import SynapseUnavailable, synapse_python


def require_synapse_python() -> Path:
    try:
        return synapse_python()
    except SynapseUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Synapse is required under CI: {exc}")
        pytest.skip(str(exc))
