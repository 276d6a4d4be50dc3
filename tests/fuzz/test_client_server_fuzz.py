"""Fuzzing the Client-Server API: whatever a client sends, the server never answers 5xx and
never logs an unhandled error (issue 12).

Schemathesis generates requests for every operation of the spec's OpenAPI (the split files
of ``../shared/matrix-spec/data/api/client-server``, merged by ``harness.openapi_spec``),
some that fit the schema, some that break it, and some with a hostile mutation of ours
(``harness.cs_fuzzer``): JSON nested hundreds of levels deep, U+0000 in strings, keys and
path parameters, integers of 2**63 and more, strings of 70,000 characters, values of the
wrong type. They
are sent as a freshly registered user, with real room, event, user and device IDs in
many path parameters, to the session's server on each backend.

The run is bounded in time and in requests; the environment changes it:

- ``PEYVAND_FUZZ_SECONDS``: seconds per backend (default 90); longer for a local hunt,
  0 to skip.
- ``PEYVAND_FUZZ_MAX_EXAMPLES``: requests per backend at most (default 20,000).
- ``PEYVAND_FUZZ_SEED``: an integer, or ``random`` (default 0, the same requests each run,
  as far as the time allows).
- ``PEYVAND_FUZZ_REPORT``: a path prefix; every finding is written to
  ``<prefix>-<backend>.json``.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from harness.cs_fuzzer import Fuzzer
from harness.openapi_spec import CLIENT_SERVER_DIR, spec_root
from harness.server import HomeserverProcess

FUZZ_SECONDS = float(os.environ.get("PEYVAND_FUZZ_SECONDS", "90"))
FUZZ_MAX_EXAMPLES = int(os.environ.get("PEYVAND_FUZZ_MAX_EXAMPLES", "20000"))


def _seed() -> int:
    value = os.environ.get("PEYVAND_FUZZ_SEED", "0")
    return random.randrange(2**32) if value == "random" else int(value)


# The fuzzing time plus the session servers' start and the spec's loading.
@pytest.mark.timeout(FUZZ_SECONDS + 300)
def test_client_server_api_fuzz(homeserver: HomeserverProcess, backend: str) -> None:
    if FUZZ_SECONDS <= 0:
        pytest.skip("PEYVAND_FUZZ_SECONDS=0")
    directory = spec_root() / CLIENT_SERVER_DIR
    if not directory.is_dir():
        message = f"the Matrix spec is not at {directory} (set PEYVAND_MATRIX_SPEC)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    seed = _seed()
    unhandled_before = homeserver.log().count("Unhandled error")
    fuzzer = Fuzzer(
        homeserver.base_url,
        homeserver.log_path,
        seconds=FUZZ_SECONDS,
        max_examples=FUZZ_MAX_EXAMPLES,
        seed=seed,
    )
    result = fuzzer.run()
    summary = f"seed {seed} (PEYVAND_FUZZ_SEED={seed} to repeat); {result.describe()}"
    print(f"\n[{backend}] {summary}")
    if result.generation_errors:
        print(f"[{backend}] operations schemathesis could not generate for:")
        for key, error in sorted(result.generation_errors.items()):
            print(f"  {key}: {error}")
    report = os.environ.get("PEYVAND_FUZZ_REPORT")
    if report:
        Path(f"{report}-{backend}.json").write_text(
            json.dumps(
                {
                    "backend": backend,
                    "seed": seed,
                    "requests": result.requests_sent,
                    "seconds": result.elapsed,
                    "rounds": result.rounds,
                    "statuses": result.statuses,
                    "examples": result.examples,
                    "generation_errors": result.generation_errors,
                    "seconds_per_operation": result.seconds_per_operation,
                    "mutations": result.mutations,
                    "findings": [f.describe() for f in result.findings.values()],
                },
                indent=2,
                ensure_ascii=True,
            ),
            encoding="utf-8",
        )

    assert homeserver.running, f"the server died while fuzzing:\n{homeserver.log()[-5000:]}"
    assert not result.failures, summary
    assert homeserver.log().count("Unhandled error") == unhandled_before, summary
    # A fuzzer that reached nothing would pass for nothing.
    assert result.requests_sent >= result.operations, summary
    assert result.statuses.get(200, 0) >= result.operations // 4, summary
